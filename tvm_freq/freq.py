"""PyTorch front-end: block DCT, frequency-domain pointwise convs, FCMask, MAC accounting.

A 1x1 conv commutes with a per-channel block DCT (paper section 3.1), so
``conv(x) == IDCT(conv(DCT(x)))``. :class:`FreqPointwiseConv2d` computes a wrapped
conv that way and multiplies the coefficients by per-channel masks in between:

* learned masks (paper section 3.3): one ``FCMask`` value per channel, turned into
  ``coefmask_n = clamp((FCMask - n / num_coefs) * num_coefs, 0, 1)``;
* hard masks: the learned masks rounded to 0/1, which always keep a prefix of the
  zigzag coefficients of every channel (a frequency band);
* fixed masks: arbitrary 0/1 ``[C, k*k]`` arrays, used by the profiling strategies
  in :mod:`tvm_freq.prune` (channel-coefficient masks need not be prefixes).

Conventions follow :mod:`tvm_freq.dct`: zigzag order, orthonormal basis, zero padding
at the bottom and right. The conv's bias is added in the spatial domain after the
IDCT and crop, never masked, so an unpruned wrapper equals the conv exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dct import MAX_BLOCK, MIN_BLOCK, dct_basis, padded_size
from .macs import LayerMacs, pointwise_macs

__all__ = [
    "Where",
    "block_dct",
    "block_idct",
    "BlockDCT",
    "BlockIDCT",
    "coef_masks",
    "hard_counts",
    "prefix_masks",
    "is_prefix_mask",
    "pointwise_skip_reason",
    "PointwiseSite",
    "pointwise_sites",
    "FreqPointwiseConv2d",
    "FreqConfig",
    "WrappedLayer",
    "SkippedLayer",
    "ApplyReport",
    "apply_",
    "split_block_size",
    "mobilenetv2_224_block_size",
    "overhead_block_size",
    "freq_layers",
    "fcmask_parameters",
    "squash",
    "KeptCounts",
    "kept_counts",
    "unwrap_",
    "fcmask_penalty",
    "PointwiseMacs",
    "ModelMacs",
    "model_macs",
    "refresh_macs",
]

Where = Literal["in", "out", "both"]
"""Which channels of a pointwise conv carry masks: inputs, outputs or both."""
_WHERE = ("in", "out", "both")
BlockSizeFn = Callable[[str, nn.Conv2d, tuple[int, int]], "int | None"]


# --------------------------------------------------------------------------- transforms


def _torch_basis(k: int, dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    # Built from dct.dct_basis so that training and the compiler share one definition.
    return torch.from_numpy(np.array(dct_basis(k), dtype=np.float64)).to(dtype=dtype, device=device)


def _check_k(k: int) -> None:
    if (
        isinstance(k, bool)
        or not isinstance(k, (int, np.integer))
        or not MIN_BLOCK <= k <= MAX_BLOCK
    ):
        raise ValueError(f"block size must be an int in [{MIN_BLOCK}, {MAX_BLOCK}], got {k!r}")


def block_dct(
    x: torch.Tensor, k: int, num_coefs: int | None = None, *, basis: torch.Tensor | None = None
) -> torch.Tensor:
    """Blocked DCT of an NCHW tensor, zero padded at the bottom and right.

    Parameters
    ----------
    x : torch.Tensor
        ``[N, C, H, W]`` input.
    k : int
        Macroblock size, 2 to 8.
    num_coefs : int, optional
        Keep only the first ``num_coefs`` zigzag coefficients (truncated DCT).
    basis : torch.Tensor, optional
        Precomputed ``[k*k, k*k]`` basis (a module's buffer); built from
        :func:`tvm_freq.dct.dct_basis` when omitted.

    Returns
    -------
    torch.Tensor
        ``[N, C, ceil(H/k), ceil(W/k), m]`` coefficients, ``m = num_coefs or k*k``; the
        same layout as :func:`tvm_freq.dct.block_dct_np`.
    """
    _check_k(k)
    if x.dim() != 4:
        raise ValueError(f"block_dct expects an NCHW tensor, got shape {tuple(x.shape)}")
    nc = k * k
    m = nc if num_coefs is None else int(num_coefs)
    if not 0 <= m <= nc:
        raise ValueError(f"num_coefs must be in [0, {nc}], got {num_coefs}")
    if basis is None:
        basis = _torch_basis(k, x.dtype, x.device)
    n, c, h, w = x.shape
    hp, wp = padded_size(h, k), padded_size(w, k)
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, wp - w, 0, hp - h))  # (left, right, top, bottom): zeros bottom/right
    blocks = (
        x.reshape(n, c, hp // k, k, wp // k, k).transpose(3, 4).reshape(n, c, hp // k, wp // k, nc)
    )
    return blocks @ basis[:m].T


def block_idct(
    coefs: torch.Tensor, k: int, out_hw: tuple[int, int], *, basis: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse of :func:`block_dct`; missing trailing coefficients count as zero.

    Parameters
    ----------
    coefs : torch.Tensor
        ``[N, C, BH, BW, m]`` coefficients in zigzag order, ``m <= k*k``.
    k : int
        Macroblock size.
    out_hw : tuple of int
        ``(H, W)`` to crop the result to.
    basis : torch.Tensor, optional
        Precomputed ``[k*k, k*k]`` basis.

    Returns
    -------
    torch.Tensor
        ``[N, C, H, W]`` spatial tensor.
    """
    _check_k(k)
    if coefs.dim() != 5 or coefs.shape[-1] > k * k:
        raise ValueError(
            f"block_idct expects [N, C, BH, BW, m <= {k * k}] coefficients, "
            f"got shape {tuple(coefs.shape)}"
        )
    if basis is None:
        basis = _torch_basis(k, coefs.dtype, coefs.device)
    n, c, bh, bw, m = coefs.shape
    h, w = out_hw
    if h > bh * k or w > bw * k:
        raise ValueError(f"out_hw {out_hw} is larger than the {bh * k}x{bw * k} blocked map")
    pix = coefs @ basis[:m]
    x = pix.reshape(n, c, bh, bw, k, k).transpose(3, 4).reshape(n, c, bh * k, bw * k)
    return x[:, :, :h, :w]


class _BasisModule(nn.Module):
    """A module with a ``basis`` buffer that is rebuilt, not rounded, on dtype changes."""

    block_size: int

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # float32 -> float64 would otherwise keep the float32-rounded basis.
        self.basis = _torch_basis(self.block_size, self.basis.dtype, self.basis.device)
        return self


class BlockDCT(_BasisModule):
    """Module form of :func:`block_dct`; the basis is a non-persistent buffer.

    Parameters
    ----------
    k : int
        Macroblock size.
    num_coefs : int, optional
        Truncate to the first ``num_coefs`` zigzag coefficients.
    """

    def __init__(self, k: int, num_coefs: int | None = None):
        super().__init__()
        _check_k(k)
        self.k, self.block_size, self.num_coefs = k, k, num_coefs
        self.register_buffer("basis", _torch_basis(k), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blocked DCT of ``x``.

        Parameters
        ----------
        x : torch.Tensor
            ``[N, C, H, W]`` input.

        Returns
        -------
        torch.Tensor
            ``[N, C, ceil(H/k), ceil(W/k), m]`` coefficients.
        """
        return block_dct(x, self.k, self.num_coefs, basis=self.basis)


class BlockIDCT(_BasisModule):
    """Module form of :func:`block_idct`; the basis is a non-persistent buffer.

    Parameters
    ----------
    k : int
        Macroblock size.
    """

    def __init__(self, k: int):
        super().__init__()
        _check_k(k)
        self.k = self.block_size = k
        self.register_buffer("basis", _torch_basis(k), persistent=False)

    def forward(self, coefs: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Inverse blocked DCT, cropped to ``out_hw``.

        Parameters
        ----------
        coefs : torch.Tensor
            ``[N, C, BH, BW, m]`` coefficients.
        out_hw : tuple of int
            Output height and width.

        Returns
        -------
        torch.Tensor
            ``[N, C, H, W]``.
        """
        return block_idct(coefs, self.k, out_hw, basis=self.basis)


# --------------------------------------------------------------------------- masks


def coef_masks(fcmask: torch.Tensor, num_coefs: int) -> torch.Tensor:
    """Soft coefficient masks from FCMask values (paper section 3.3).

    Parameters
    ----------
    fcmask : torch.Tensor
        ``[C]`` FCMask values, one per channel.
    num_coefs : int
        ``k*k``.

    Returns
    -------
    torch.Tensor
        ``[C, num_coefs]`` with ``clamp((FCMask - n / num_coefs) * num_coefs, 0, 1)``.
    """
    n = torch.arange(num_coefs, dtype=fcmask.dtype, device=fcmask.device)
    # F * nc - n is the paper's formula rearranged; it is exactly 1.0 at F == 1 for any nc.
    return torch.clamp(fcmask[:, None] * num_coefs - n[None, :], 0.0, 1.0)


def hard_counts(fcmask: torch.Tensor, num_coefs: int) -> torch.Tensor:
    """Kept coefficient counts after rounding the soft masks to 0/1.

    Coefficient ``n`` is kept when ``coefmask_n > 0.5``. Because ``coefmask_n`` does not
    increase with ``n``, the kept set is the prefix ``n < count``.

    Parameters
    ----------
    fcmask : torch.Tensor
        ``[C]`` FCMask values.
    num_coefs : int
        ``k*k``.

    Returns
    -------
    torch.Tensor
        ``[C]`` int64 counts in ``[0, num_coefs]``.
    """
    with torch.no_grad():
        return (coef_masks(fcmask.detach(), num_coefs) > 0.5).sum(dim=1).to(torch.int64)


def prefix_masks(counts: torch.Tensor | Sequence[int], num_coefs: int) -> torch.Tensor:
    """0/1 float masks ``[C, num_coefs]`` keeping the first ``counts[c]`` coefficients.

    Parameters
    ----------
    counts : torch.Tensor or sequence of int
        Kept counts per channel, each in ``[0, num_coefs]``.
    num_coefs : int
        ``k*k``.

    Returns
    -------
    torch.Tensor
        float32 masks.
    """
    counts = torch.as_tensor(counts, dtype=torch.int64)
    if counts.dim() != 1 or (counts.numel() and (counts.min() < 0 or counts.max() > num_coefs)):
        raise ValueError(f"counts must be a 1-D list of ints in [0, {num_coefs}]")
    return (torch.arange(num_coefs)[None, :] < counts[:, None]).to(torch.float32)


def is_prefix_mask(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Which rows of a ``[C, n]`` mask are 0/1 and keep a prefix of the coefficients.

    Parameters
    ----------
    mask : torch.Tensor or numpy.ndarray
        ``[C, n]`` mask.

    Returns
    -------
    numpy.ndarray
        ``[C]`` bool.
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    binary = np.all((m == 0) | (m == 1), axis=1)
    kept = m != 0
    # A prefix mask is non-increasing along the coefficient axis.
    monotone = (
        np.all(kept[:, :-1] >= kept[:, 1:], axis=1) if m.shape[1] > 1 else np.ones(len(m), bool)
    )
    return binary & monotone


def _counts_of(mask: torch.Tensor | None, channels: int, nc: int, what: str) -> np.ndarray:
    if mask is None:
        return np.full(channels, nc, dtype=np.int64)
    if not is_prefix_mask(mask).all():
        raise ValueError(
            f"{what} masks are not contiguous prefixes (channel-coefficient masks?); "
            "kept counts exist only for channel-frequency band masks"
        )
    return (mask != 0).sum(dim=1).cpu().numpy().astype(np.int64)


def _masked_macs(
    h: int, w: int, k: int, in_mask: np.ndarray, out_mask: np.ndarray, batch: int
) -> LayerMacs:
    # Arbitrary (sparse) masks: idealised count where every kept (channel, coef) costs
    # the same as in a band. Equals macs.pointwise_macs for prefix masks.
    blocks = batch * (padded_size(h, k) // k) * (padded_size(w, k) // k)
    cin_n, cout_n = in_mask.sum(0).astype(np.int64), out_mask.sum(0).astype(np.int64)
    return LayerMacs(
        dense=batch * h * w * in_mask.shape[0] * out_mask.shape[0],
        dct=blocks * k * k * int(in_mask.sum()),
        gemm=blocks * int(np.dot(cin_n, cout_n)),
        idct=blocks * k * k * int(out_mask.sum()),
    )


# --------------------------------------------------------------------------- eligibility


def pointwise_skip_reason(module: nn.Module) -> str | None:
    """Why a module is not an eligible pointwise conv, or ``None`` when it is one.

    Eligible: ``nn.Conv2d`` with a 1x1 kernel, stride 1, groups 1, dilation 1 and
    padding 0, or a :class:`FreqPointwiseConv2d` (which wraps one).

    Parameters
    ----------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    str or None
        A short reason, e.g. ``"stride (2, 2) != 1"``.
    """
    if isinstance(module, FreqPointwiseConv2d):
        return None
    if not isinstance(module, nn.Conv2d):
        return f"not a Conv2d ({type(module).__name__})"
    checks = (
        ("kernel", tuple(module.kernel_size), (1, 1)),
        ("stride", tuple(module.stride), (1, 1)),
        ("dilation", tuple(module.dilation), (1, 1)),
        ("groups", module.groups, 1),
    )
    for what, got, want in checks:
        if got != want:
            return f"{what} {got} != {want}"
    if isinstance(module.padding, str):
        if module.padding != "valid" and module.padding != "same":
            return f"padding {module.padding!r} is not zero"
    elif tuple(module.padding) != (0, 0):
        return f"padding {tuple(module.padding)} != (0, 0)"
    return None


@dataclass(frozen=True)
class PointwiseSite:
    """An eligible pointwise conv as seen in one forward pass.

    Attributes
    ----------
    name : str
        Qualified module name.
    ordinal : int
        0-based index among eligible pointwise convs in forward execution order.
    module : torch.nn.Module
        The ``nn.Conv2d`` or :class:`FreqPointwiseConv2d`.
    in_hw : tuple of int
        Input height and width.
    batch : int
        Batch size of the example input.
    """

    name: str
    ordinal: int
    module: nn.Module
    in_hw: tuple[int, int]
    batch: int


def _run_example(model: nn.Module, example_input: Any) -> Any:
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    modes = {m: m.training for m in model.modules()}
    model.eval()  # BN must not update its running stats during a bookkeeping pass
    try:
        with torch.no_grad():
            return model(*args)
    finally:
        for m, training in modes.items():
            m.training = training


def _trace_modules(
    model: nn.Module, example_input: Any, want: Callable[[nn.Module], bool]
) -> list[tuple[str, nn.Module, tuple, Any]]:
    """Run ``example_input`` and record (name, module, input shape, output) in call order."""
    calls: list[tuple[str, nn.Module, tuple, Any]] = []
    seen: set[int] = set()
    handles = []

    def hook(name: str):
        def fn(mod: nn.Module, args: tuple, out: Any) -> None:
            if id(mod) in seen:  # a shared module counts once, at its first call
                return
            seen.add(id(mod))
            calls.append((name, mod, tuple(args[0].shape), out))

        return fn

    for name, mod in model.named_modules():
        if want(mod):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        _run_example(model, example_input)
    finally:
        for h in handles:
            h.remove()
    return calls


def pointwise_sites(model: nn.Module, example_input: Any) -> list[PointwiseSite]:
    """Eligible pointwise convs in forward execution order, with their input sizes.

    The order is the one the convs have in an exported graph; it defines the
    ``ordinal`` of mask files. Convs the example input does not reach are left out.

    Parameters
    ----------
    model : torch.nn.Module
        Plain or wrapped model.
    example_input : torch.Tensor or tuple of torch.Tensor
        Input(s) for one forward pass (run in eval mode, without gradients).

    Returns
    -------
    list of PointwiseSite
        One per eligible conv that ran.
    """
    calls = _trace_modules(
        model,
        example_input,
        lambda m: (
            isinstance(m, (nn.Conv2d, FreqPointwiseConv2d)) and pointwise_skip_reason(m) is None
        ),
    )
    return [
        PointwiseSite(name, i, mod, (shape[2], shape[3]), shape[0])
        for i, (name, mod, shape, _) in enumerate(calls)
    ]


# --------------------------------------------------------------------------- the wrapper


class FreqPointwiseConv2d(_BasisModule):
    """A 1x1 conv computed as block DCT -> coefficient masks -> 1x1 conv -> IDCT -> crop.

    The wrapped conv's ``weight`` and ``bias`` become this module's parameters under
    the same names, so optimizers and state-dict keys of the weights do not change.

    Parameters
    ----------
    conv : torch.nn.Conv2d
        An eligible pointwise conv (see :func:`pointwise_skip_reason`).
    block_size : int
        Macroblock size ``k``, 2 to 8.
    where : {"in", "out", "both"}
        Which side's channels carry learned masks (and which side the profiling
        strategies mask).
    learn : bool
        Create learnable ``fcmask_in`` / ``fcmask_out`` parameters (one value per
        channel). Without them the layer is dense until fixed masks are set.
    init : float
        Initial FCMask value; 1.0 keeps every coefficient.

    Attributes
    ----------
    mode : {"soft", "hard", "fixed"}
        ``soft``: masks from FCMask, differentiable. ``hard``: FCMask masks rounded to
        0/1 (prefix bands). ``fixed``: the masks given to :meth:`set_fixed_masks`.
    in_hw : tuple of int or None
        Input size of the last forward pass (or of :func:`apply_`'s example input).
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        block_size: int = 4,
        where: Where = "in",
        learn: bool = True,
        init: float = 1.0,
    ):
        super().__init__()
        reason = pointwise_skip_reason(conv)
        if reason is not None or isinstance(conv, FreqPointwiseConv2d):
            raise ValueError(f"cannot wrap {conv!r}: {reason or 'already wrapped'}")
        _check_k(block_size)
        if where not in _WHERE:
            raise ValueError(f"where must be one of {_WHERE}, got {where!r}")
        if not 0.0 <= init <= 1.0:
            raise ValueError(f"init must be in [0, 1], got {init}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.block_size, self.where, self.learn = int(block_size), where, learn
        self.num_coefs = self.block_size**2
        self.weight = conv.weight
        self.bias = conv.bias
        dev, dt = conv.weight.device, conv.weight.dtype
        self.fcmask_in: nn.Parameter | None = None
        self.fcmask_out: nn.Parameter | None = None
        if learn and where in ("in", "both"):
            self.fcmask_in = nn.Parameter(
                torch.full((self.in_channels,), float(init), device=dev, dtype=dt)
            )
        if learn and where in ("out", "both"):
            self.fcmask_out = nn.Parameter(
                torch.full((self.out_channels,), float(init), device=dev, dtype=dt)
            )
        self.register_buffer("basis", _torch_basis(self.block_size, dt, dev), persistent=False)
        self.mode: str = "soft" if learn else "fixed"
        self._fixed_in: torch.Tensor | None = None
        self._fixed_out: torch.Tensor | None = None
        self.in_hw: tuple[int, int] | None = None

    # -- masks -------------------------------------------------------------------------

    def set_fixed_masks(
        self,
        in_mask: torch.Tensor | np.ndarray | None = None,
        out_mask: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Switch to fixed masks (any 0/1 or float ``[C, k*k]`` arrays); ``None`` = unmasked.

        Parameters
        ----------
        in_mask : torch.Tensor or numpy.ndarray, optional
            ``[Cin, k*k]`` mask on the input coefficients.
        out_mask : torch.Tensor or numpy.ndarray, optional
            ``[Cout, k*k]`` mask on the output coefficients.
        """
        for what, mask, ch in (
            ("in_mask", in_mask, self.in_channels),
            ("out_mask", out_mask, self.out_channels),
        ):
            if mask is not None and tuple(mask.shape) != (ch, self.num_coefs):
                raise ValueError(
                    f"{what} must have shape ({ch}, {self.num_coefs}), got {tuple(mask.shape)}"
                )
        self._fixed_in = None if in_mask is None else self._as_mask(in_mask)
        self._fixed_out = None if out_mask is None else self._as_mask(out_mask)
        self.mode = "fixed"

    def set_counts(
        self, kin: Sequence[int] | None = None, kout: Sequence[int] | None = None
    ) -> None:
        """Switch to fixed prefix (band) masks given the kept count per channel.

        Parameters
        ----------
        kin : sequence of int, optional
            Kept coefficients per input channel; ``None`` leaves inputs unmasked.
        kout : sequence of int, optional
            Kept coefficients per output channel; ``None`` leaves outputs unmasked.
        """
        for what, counts, ch in (("kin", kin, self.in_channels), ("kout", kout, self.out_channels)):
            if counts is not None and len(counts) != ch:
                raise ValueError(f"{what} must have {ch} entries, got {len(counts)}")
        self.set_fixed_masks(
            None if kin is None else prefix_masks(kin, self.num_coefs),
            None if kout is None else prefix_masks(kout, self.num_coefs),
        )

    def _as_mask(self, mask: torch.Tensor | np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        return t.detach().to(device=self.weight.device, dtype=self.weight.dtype).clone()

    def masks(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The ``(in, out)`` masks the forward pass applies now; ``None`` means unmasked.

        Returns
        -------
        tuple of (torch.Tensor or None)
            ``[Cin, k*k]`` and ``[Cout, k*k]`` masks; differentiable in soft mode.
        """
        if self.mode == "fixed":
            return self._fixed_in, self._fixed_out
        out: list[torch.Tensor | None] = []
        for p in (self.fcmask_in, self.fcmask_out):
            if p is None:
                out.append(None)
            elif self.mode == "soft":
                out.append(coef_masks(p, self.num_coefs))
            else:
                out.append(prefix_masks(hard_counts(p, self.num_coefs), self.num_coefs).to(p))
        return out[0], out[1]

    def hard_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """0/1 ``(in, out)`` masks as deployed: soft FCMask masks are rounded.

        Returns
        -------
        tuple of numpy.ndarray
            bool ``[Cin, k*k]`` and ``[Cout, k*k]``; all True where a side is unmasked.
        """
        sides = []
        fixed = (self._fixed_in, self._fixed_out)
        learned = (self.fcmask_in, self.fcmask_out)
        for ch, fx, p in zip((self.in_channels, self.out_channels), fixed, learned, strict=True):
            if self.mode == "fixed":
                m = (
                    np.ones((ch, self.num_coefs), bool)
                    if fx is None
                    else fx.detach().cpu().numpy() != 0
                )
            elif p is None:
                m = np.ones((ch, self.num_coefs), bool)
            else:
                m = prefix_masks(hard_counts(p, self.num_coefs), self.num_coefs).numpy() != 0
            sides.append(m)
        return sides[0], sides[1]

    def kept_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Kept coefficient counts ``(kin, kout)`` per channel, as deployed.

        Soft FCMask masks are counted as if rounded (coefficients with
        ``coefmask > 0.5``), which always gives a prefix.

        Returns
        -------
        tuple of numpy.ndarray
            int64 ``[Cin]`` and ``[Cout]``; an unmasked side keeps all ``k*k``.

        Raises
        ------
        ValueError
            When fixed masks are not prefixes (channel-coefficient pruning).
        """
        nc = self.num_coefs
        if self.mode == "fixed":
            return (
                _counts_of(self._fixed_in, self.in_channels, nc, "input"),
                _counts_of(self._fixed_out, self.out_channels, nc, "output"),
            )
        res = []
        for p, ch in ((self.fcmask_in, self.in_channels), (self.fcmask_out, self.out_channels)):
            res.append(np.full(ch, nc, np.int64) if p is None else hard_counts(p, nc).cpu().numpy())
        return res[0], res[1]

    def squash_(self) -> FreqPointwiseConv2d:
        """Round learned masks to 0/1 and freeze them (hard mode). Fixed masks stay as they are.

        Returns
        -------
        FreqPointwiseConv2d
            ``self``.
        """
        if self.mode == "soft":
            self.mode = "hard"
        for p in (self.fcmask_in, self.fcmask_out):
            if p is not None:
                p.requires_grad_(False)
        return self

    def macs(self, hw: tuple[int, int] | None = None, batch: int = 1) -> LayerMacs:
        """MACs of this layer as deployed (hard masks), see :mod:`tvm_freq.macs`.

        Parameters
        ----------
        hw : tuple of int, optional
            Input size; defaults to :attr:`in_hw`.
        batch : int
            Batch size.

        Returns
        -------
        LayerMacs
            Dense and frequency-path MACs.
        """
        hw = hw or self.in_hw
        if hw is None:
            raise ValueError(
                "input size unknown: pass hw, or run a forward pass / apply_ with example_input"
            )
        mi, mo = self.hard_masks()
        if is_prefix_mask(mi).all() and is_prefix_mask(mo).all():
            return pointwise_macs(hw[0], hw[1], self.block_size, mi.sum(1), mo.sum(1), batch)
        return _masked_macs(hw[0], hw[1], self.block_size, mi, mo, batch)

    # -- state -------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        """Mode and fixed masks, saved in the state dict so checkpoints restore them.

        Returns
        -------
        dict
            ``mode``, ``block_size`` and the fixed masks that are set.
        """
        state: dict[str, Any] = {"mode": self.mode, "block_size": self.block_size}
        if self._fixed_in is not None:
            state["fixed_in"] = self._fixed_in
        if self._fixed_out is not None:
            state["fixed_out"] = self._fixed_out
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved.

        Parameters
        ----------
        state : dict
            Saved extra state; its block size must match this layer's.
        """
        if state.get("block_size", self.block_size) != self.block_size:
            raise ValueError(
                f"state was saved with block size {state['block_size']}, "
                f"this layer uses {self.block_size}"
            )
        self._fixed_in = None if state.get("fixed_in") is None else self._as_mask(state["fixed_in"])
        self._fixed_out = (
            None if state.get("fixed_out") is None else self._as_mask(state["fixed_out"])
        )
        self.mode = state.get("mode", self.mode)

    def _apply(self, fn, recurse=True):
        # Keep the fixed masks (plain tensor attributes) on the module's device/dtype.
        super()._apply(fn, recurse)
        if self._fixed_in is not None:
            self._fixed_in = self._fixed_in.to(device=self.weight.device, dtype=self.weight.dtype)
        if self._fixed_out is not None:
            self._fixed_out = self._fixed_out.to(device=self.weight.device, dtype=self.weight.dtype)
        return self

    def to_conv(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` sharing this layer's weight and bias (masks dropped).

        Returns
        -------
        torch.nn.Conv2d
            The dense conv.
        """
        # Built on the meta device: no throw-away initialisation, no global RNG draws.
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, 1, bias=self.bias is not None, device="meta"
        )
        conv.weight = self.weight
        if self.bias is not None:
            conv.bias = self.bias
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, block_size={self.block_size}, "
            f"where={self.where!r}, mode={self.mode!r}, bias={self.bias is not None}"
        )

    # -- forward -----------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """DCT -> input masks -> 1x1 conv per coefficient -> output masks -> IDCT -> crop -> bias.

        Parameters
        ----------
        x : torch.Tensor
            ``[N, Cin, H, W]`` input.

        Returns
        -------
        torch.Tensor
            ``[N, Cout, H, W]``.
        """
        n, c, h, w = x.shape
        if not torch.jit.is_tracing():
            self.in_hw = (int(h), int(w))
        k, nc = self.block_size, self.num_coefs
        mask_in, mask_out = self.masks()
        m = nc
        if self.mode != "soft":
            # Truncation: output coefficient n depends only on input coefficient n, so
            # coefficients past the last one any channel keeps (on either side) are zero
            # and neither the DCT nor the IDCT computes them.
            for mask in (mask_in, mask_out):
                if mask is not None:
                    nz = torch.nonzero(mask.detach().ne(0).any(dim=0))
                    m = min(m, int(nz.max()) + 1 if nz.numel() else 0)
        bh, bw = padded_size(h, k) // k, padded_size(w, k) // k
        if m == 0:
            y = x.new_zeros((n, self.out_channels, h, w))
        else:
            coefs = block_dct(x, k, m, basis=self.basis)  # [N, Cin, BH, BW, m]
            if mask_in is not None:
                coefs = coefs * mask_in[:, None, None, :m]
            # The 1x1 conv on [N, Cin, P, m]: each coefficient position is a "pixel".
            out = F.conv2d(coefs.reshape(n, c, bh * bw, m), self.weight)
            if mask_out is not None:
                out = out * mask_out[:, None, :m]
            y = block_idct(
                out.reshape(n, self.out_channels, bh, bw, m), k, (h, w), basis=self.basis
            )
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


# --------------------------------------------------------------------------- config / apply


@dataclass
class FreqConfig:
    """How :func:`apply_` wraps pointwise convs.

    Parameters
    ----------
    block_size : int or callable
        Macroblock size for every layer, or ``fn(name, conv, input_hw) -> int | None``
        giving it per layer (``None`` skips the layer). A callable needs
        ``example_input`` in :func:`apply_`.
    where : {"in", "out", "both"}
        Which channels carry learned masks.
    learn : bool
        Create learnable FCMask parameters.
    init : float
        Initial FCMask value in ``[0, 1]``.
    """

    block_size: int | BlockSizeFn = 4
    where: Where = "in"
    learn: bool = True
    init: float = 1.0

    def __post_init__(self) -> None:
        if not callable(self.block_size):
            _check_k(self.block_size)
        if self.where not in _WHERE:
            raise ValueError(f"where must be one of {_WHERE}, got {self.where!r}")
        if not isinstance(self.learn, bool):
            raise ValueError(f"learn must be a bool, got {self.learn!r}")
        if not isinstance(self.init, (int, float)) or not 0.0 <= float(self.init) <= 1.0:
            raise ValueError(f"init must be a number in [0, 1], got {self.init!r}")


@dataclass(frozen=True)
class WrappedLayer:
    """A conv that :func:`apply_` wrapped."""

    name: str
    ordinal: int | None
    block_size: int
    in_channels: int
    out_channels: int
    in_hw: tuple[int, int] | None


@dataclass(frozen=True)
class SkippedLayer:
    """A conv that :func:`apply_` left alone, and why."""

    name: str
    reason: str


@dataclass
class ApplyReport:
    """What :func:`apply_` wrapped and skipped."""

    wrapped: list[WrappedLayer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"wrapped {len(self.wrapped)} pointwise convs, skipped {len(self.skipped)} convs"]
        for w in self.wrapped:
            hw = f" {w.in_hw[0]}x{w.in_hw[1]}" if w.in_hw else ""
            lines.append(f"  + {w.name}: {w.in_channels}->{w.out_channels}{hw} k={w.block_size}")
        for s in self.skipped:
            lines.append(f"  - {s.name}: {s.reason}")
        return "\n".join(lines)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_(
    model: nn.Module,
    config: FreqConfig | None = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    example_input: Any = None,
) -> ApplyReport:
    """Wrap the eligible pointwise convs of ``model`` in place with :class:`FreqPointwiseConv2d`.

    Parameters
    ----------
    model : torch.nn.Module
        Model to modify in place.
    config : FreqConfig, optional
        Block size policy and mask options; defaults to ``FreqConfig()``.
    filter_fn : callable, optional
        ``filter_fn(module, qualified_name) -> bool`` (torchao's order); convs it
        rejects are skipped.
    example_input : torch.Tensor or tuple, optional
        Input for one forward pass that finds execution order and input sizes.
        Needed for a callable ``block_size``, recommended otherwise (MAC accounting
        and the MAC-weighted penalty need input sizes).

    Returns
    -------
    ApplyReport
        The wrapped layers (with ordinals and input sizes when known) and the
        skipped convs with a reason each.
    """
    config = config or FreqConfig()
    if callable(config.block_size) and example_input is None:
        raise ValueError(
            "a callable block_size needs example_input to know each layer's input size"
        )
    report = ApplyReport()
    sites: dict[str, PointwiseSite] = {}
    if example_input is not None:
        sites = {s.name: s for s in pointwise_sites(model, example_input)}
    candidates = [
        (n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, FreqPointwiseConv2d))
    ]
    for name, mod in candidates:
        if isinstance(mod, FreqPointwiseConv2d):
            report.skipped.append(SkippedLayer(name, "already wrapped"))
            continue
        reason = pointwise_skip_reason(mod)
        if reason is None and example_input is not None and name not in sites:
            reason = "not executed by example_input"
        if reason is None and filter_fn is not None and not filter_fn(mod, name):
            reason = "rejected by filter_fn"
        site = sites.get(name)
        k: int | None = None
        if reason is None:
            if callable(config.block_size):
                assert site is not None
                k = config.block_size(name, mod, site.in_hw)
                if k is None:
                    reason = "block_size policy returned None"
                else:
                    _check_k(k)
            else:
                k = config.block_size
        if reason is not None:
            report.skipped.append(SkippedLayer(name, reason))
            continue
        assert k is not None
        layer = FreqPointwiseConv2d(mod, k, config.where, config.learn, float(config.init))
        layer.train(mod.training)
        if site is not None:
            layer.in_hw = site.in_hw
        _set_submodule(model, name, layer)
        report.wrapped.append(
            WrappedLayer(
                name,
                site.ordinal if site else None,
                k,
                mod.in_channels,
                mod.out_channels,
                site.in_hw if site else None,
            )
        )
    report.wrapped.sort(key=lambda w: (w.ordinal is None, w.ordinal or 0))
    return report


def split_block_size(boundary: int = 13, early: int = 2, late: int = 7) -> BlockSizeFn:
    """Block-size policy by block index: ``early`` up to block ``boundary``, ``late`` after.

    The block index is the first number in the module name (``features.<i>...`` in
    MobileNetV2); names without one get ``early``.

    Parameters
    ----------
    boundary : int
        Last block index that gets ``early``.
    early, late : int
        Macroblock sizes.

    Returns
    -------
    callable
        ``fn(name, conv, input_hw) -> int`` for :class:`FreqConfig`.
    """
    _check_k(early)
    _check_k(late)

    def policy(name: str, conv: nn.Conv2d, input_hw: tuple[int, int]) -> int:
        idx = next((int(p) for p in name.split(".") if p.isdigit()), None)
        return early if idx is None or idx <= boundary else late

    return policy


def mobilenetv2_224_block_size() -> BlockSizeFn:
    """The paper's MobileNetV2-224 (ImageNet) policy: 2x2 up to block 13, 7x7 after.

    Blocks 14 onwards run on 7x7 maps at 224x224, so a 7x7 macroblock covers a map.

    Returns
    -------
    callable
        Block-size policy for :class:`FreqConfig`.
    """
    return split_block_size(13, 2, 7)


# --------------------------------------------------------------------------- model helpers


def freq_layers(model: nn.Module) -> Iterator[tuple[str, FreqPointwiseConv2d]]:
    """Yield ``(name, layer)`` for every :class:`FreqPointwiseConv2d` in ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        Any model.

    Yields
    ------
    tuple of (str, FreqPointwiseConv2d)
        Qualified name and layer, in module order.
    """
    for name, mod in model.named_modules():
        if isinstance(mod, FreqPointwiseConv2d):
            yield name, mod


def fcmask_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All FCMask parameters of ``model`` (for a mask optimizer).

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.

    Returns
    -------
    list of torch.nn.Parameter
        ``fcmask_in`` / ``fcmask_out`` of every layer.
    """
    return [
        p
        for _, layer in freq_layers(model)
        for p in (layer.fcmask_in, layer.fcmask_out)
        if p is not None
    ]


def squash(model: nn.Module) -> nn.Module:
    """Hard-round every learned mask to 0/1 and freeze it (in place).

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.

    Returns
    -------
    torch.nn.Module
        ``model``.
    """
    for _, layer in freq_layers(model):
        layer.squash_()
    return model


class KeptCounts(NamedTuple):
    """Per-channel kept coefficient counts of one layer."""

    block_size: int
    kin: list[int]
    kout: list[int]


def kept_counts(model: nn.Module) -> dict[str, KeptCounts]:
    """Kept coefficient counts of every wrapped layer, as deployed (rounded masks).

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.

    Returns
    -------
    dict of str to KeptCounts
        Keyed by layer name.
    """
    out = {}
    for name, layer in freq_layers(model):
        kin, kout = layer.kept_counts()
        out[name] = KeptCounts(layer.block_size, kin.tolist(), kout.tolist())
    return out


def unwrap_(model: nn.Module) -> nn.Module:
    """Replace every :class:`FreqPointwiseConv2d` by its plain conv (in place).

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model (deep-copy it first to keep the wrapped one).

    Returns
    -------
    torch.nn.Module
        ``model``, now with plain ``nn.Conv2d`` layers.
    """
    for name, layer in list(freq_layers(model)):
        conv = layer.to_conv()
        conv.train(layer.training)
        _set_submodule(model, name, conv)
    return model


# --------------------------------------------------------------------------- regulariser


def _mask_groups(model: nn.Module) -> list[tuple[FreqPointwiseConv2d, nn.Parameter, str]]:
    groups = []
    for _, layer in freq_layers(model):
        for side, p in (("in", layer.fcmask_in), ("out", layer.fcmask_out)):
            if p is not None and layer.mode == "soft":
                groups.append((layer, p, side))
    return groups


def fcmask_penalty(model: nn.Module, weighting: Literal["mean", "macs"] = "mean") -> torch.Tensor:
    """FCMask regulariser: ``sum over layers of mean(|FCMask_l|)`` (paper section 3.3).

    Every learned mask vector (a layer's input side and output side count
    separately) adds ``w_g * mean(|FCMask_g|)``.

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model; layers in hard or fixed mode are ignored.
    weighting : {"mean", "macs"}
        ``"mean"``: ``w_g = 1`` (the paper). ``"macs"``: ``w_g`` proportional to the
        MACs the group's coefficients cost when all are kept (DCT or IDCT plus the
        GEMM work they feed), normalised so the weights average 1. The penalty has
        the same value at ``FCMask == 1`` either way, so ``lambda`` keeps its scale,
        but the push is strongest where pruning saves the most MACs.

    Returns
    -------
    torch.Tensor
        Scalar penalty (zero, without grad, when nothing is learnable).
    """
    if weighting not in ("mean", "macs"):
        raise ValueError(f"weighting must be 'mean' or 'macs', got {weighting!r}")
    groups = _mask_groups(model)
    if not groups:
        return torch.zeros(())
    terms = torch.stack([p.abs().mean() for _, p, _ in groups])
    if weighting == "mean":
        return terms.sum()
    costs = []
    for layer, _, side in groups:
        if layer.in_hw is None:
            raise ValueError(
                "weighting='macs' needs input sizes: "
                "run a forward pass or pass example_input to apply_"
            )
        h, w = layer.in_hw
        k = layer.block_size
        blocks = (padded_size(h, k) // k) * (padded_size(w, k) // k)
        ch, other = (
            (layer.in_channels, layer.out_channels)
            if side == "in"
            else (layer.out_channels, layer.in_channels)
        )
        # Each kept (channel, coefficient) costs k^2 in its transform and `other` in the GEMM.
        costs.append(blocks * layer.num_coefs * ch * (k * k + other))
    cost = torch.tensor(costs, dtype=terms.dtype, device=terms.device)
    weights = cost * (len(costs) / cost.sum())
    return (weights * terms).sum()


# --------------------------------------------------------------------------- MAC accounting


@dataclass(frozen=True)
class PointwiseMacs:
    """MACs of one eligible pointwise conv; ``macs`` counts dense-only when not wrapped."""

    name: str
    ordinal: int
    in_hw: tuple[int, int]
    in_channels: int
    out_channels: int
    block_size: int | None
    macs: LayerMacs
    batch: int = 1

    @property
    def cost(self) -> int:
        """MACs as deployed: frequency path when wrapped, dense otherwise."""
        return self.macs.freq if self.block_size is not None else self.macs.dense


@dataclass(frozen=True)
class ModelMacs:
    """Whole-model MAC accounting (all convs and linears) for one example input.

    Attributes
    ----------
    pointwise : tuple of PointwiseMacs
        Eligible pointwise convs in execution order.
    other : int
        MACs of every other conv and linear layer.
    """

    pointwise: tuple[PointwiseMacs, ...]
    other: int

    @property
    def pointwise_dense(self) -> int:
        """Dense MACs of the eligible pointwise convs."""
        return sum(p.macs.dense for p in self.pointwise)

    @property
    def pointwise_freq(self) -> int:
        """Pointwise MACs as deployed, DCT/IDCT overhead included."""
        return sum(p.cost for p in self.pointwise)

    @property
    def transform_overhead(self) -> int:
        """DCT + IDCT MACs of the wrapped layers."""
        return sum(p.macs.dct + p.macs.idct for p in self.pointwise if p.block_size is not None)

    @property
    def pointwise_reduction(self) -> float:
        """``pointwise_dense / pointwise_freq`` (> 1 is a saving)."""
        return self.pointwise_dense / self.pointwise_freq if self.pointwise_freq else math.inf

    @property
    def network_dense(self) -> int:
        """MACs of the plain model: all convs and linears."""
        return self.other + self.pointwise_dense

    @property
    def network_freq(self) -> int:
        """MACs of the whole model as deployed."""
        return self.other + self.pointwise_freq

    @property
    def network_reduction(self) -> float:
        """``network_dense / network_freq``."""
        return self.network_dense / self.network_freq if self.network_freq else math.inf

    def as_dict(self) -> dict[str, Any]:
        """Summary numbers and per-layer rows, JSON-serialisable.

        Returns
        -------
        dict
            Totals and a ``layers`` list.
        """
        return {
            "pointwise_dense": self.pointwise_dense,
            "pointwise_freq": self.pointwise_freq,
            "pointwise_reduction": self.pointwise_reduction,
            "transform_overhead": self.transform_overhead,
            "network_dense": self.network_dense,
            "network_freq": self.network_freq,
            "network_reduction": self.network_reduction,
            "other": self.other,
            "layers": [
                {
                    "name": p.name,
                    "ordinal": p.ordinal,
                    "in_hw": list(p.in_hw),
                    "cin": p.in_channels,
                    "cout": p.out_channels,
                    "block": p.block_size,
                    "dense": p.macs.dense,
                    "dct": p.macs.dct,
                    "gemm": p.macs.gemm,
                    "idct": p.macs.idct,
                }
                for p in self.pointwise
            ],
        }


def model_macs(model: nn.Module, example_input: Any, *, unpruned: bool = False) -> ModelMacs:
    """Count the MACs of every conv and linear layer on one example input.

    Wrapped pointwise convs are counted with their deployed (rounded) masks: dense
    pointwise, truncated DCT, banded GEMMs and IDCT (:func:`tvm_freq.macs.pointwise_macs`).

    Parameters
    ----------
    model : torch.nn.Module
        Plain or wrapped model.
    example_input : torch.Tensor or tuple
        Input whose batch size the counts are for.
    unpruned : bool
        Count wrapped layers as if every coefficient were kept (transform overhead only).

    Returns
    -------
    ModelMacs
        Per-layer and whole-model counts.
    """
    calls = _trace_modules(
        model, example_input, lambda m: isinstance(m, (nn.Conv2d, nn.Linear, FreqPointwiseConv2d))
    )
    pointwise: list[PointwiseMacs] = []
    other = 0
    for name, mod, shape, out in calls:
        if isinstance(mod, nn.Linear):
            other += int(out.numel()) * mod.in_features
            continue
        if pointwise_skip_reason(mod) is not None:
            assert isinstance(mod, nn.Conv2d)
            kh, kw = mod.kernel_size
            other += int(out.numel()) * (mod.in_channels // mod.groups) * kh * kw
            continue
        batch, _, h, w = shape
        cin, cout = mod.in_channels, mod.out_channels
        if isinstance(mod, FreqPointwiseConv2d):
            k = mod.block_size
            if unpruned:
                lm = pointwise_macs(h, w, k, [k * k] * cin, [k * k] * cout, batch)
            else:
                lm = mod.macs((h, w), batch)
            block: int | None = k
        else:
            lm = LayerMacs(dense=batch * h * w * cin * cout, dct=0, gemm=0, idct=0)
            block = None
        pointwise.append(PointwiseMacs(name, len(pointwise), (h, w), cin, cout, block, lm, batch))
    return ModelMacs(tuple(pointwise), other)


def refresh_macs(model: nn.Module, base: ModelMacs) -> ModelMacs:
    """Recount the wrapped layers of ``base`` from their current masks, without a forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        The model ``base`` was counted on (same wrapped layers).
    base : ModelMacs
        An earlier :func:`model_macs` result; input sizes and other layers come from it.

    Returns
    -------
    ModelMacs
        Counts for the masks the model has now.
    """
    layers = dict(freq_layers(model))
    rows = []
    for p in base.pointwise:
        layer = layers.get(p.name)
        if layer is not None and p.block_size is not None:
            p = PointwiseMacs(
                p.name,
                p.ordinal,
                p.in_hw,
                p.in_channels,
                p.out_channels,
                p.block_size,
                layer.macs(p.in_hw, p.batch),
            )
        rows.append(p)
    return ModelMacs(tuple(rows), base.other)


def overhead_block_size(max_overhead: float = 0.4, max_block: int = 4) -> BlockSizeFn:
    """Block-size policy: per layer, the largest ``k <= max_block`` whose overhead fits.

    The overhead of an unpruned layer is its DCT + IDCT MACs over its dense MACs,
    ``(Cin + Cout) k^2 / (Cin Cout)`` times the zero-padding factor. Narrow layers
    (large overhead) get small blocks, wide ones large blocks; ``k = 2`` when nothing
    fits. This is the paper's trade-off between pruning precision and transform cost
    (section 3.1) made per layer.

    Parameters
    ----------
    max_overhead : float
        Largest acceptable overhead ratio, > 0.
    max_block : int
        Largest block size tried, 2 to 8.

    Returns
    -------
    callable
        Block-size policy for :class:`FreqConfig`.
    """
    if not max_overhead > 0:
        raise ValueError(f"max_overhead must be > 0, got {max_overhead}")
    _check_k(max_block)

    def policy(name: str, conv: nn.Conv2d, input_hw: tuple[int, int]) -> int:
        h, w = input_hw
        cin, cout = conv.in_channels, conv.out_channels
        for k in range(max_block, MIN_BLOCK, -1):
            lm = pointwise_macs(h, w, k, [k * k] * cin, [k * k] * cout)
            if (lm.dct + lm.idct) / lm.dense <= max_overhead:
                return k
        return MIN_BLOCK

    return policy
