"""The wrapper layer: a 1x1 conv computed as block DCT -> masks -> conv -> IDCT.

A 1x1 conv commutes with a per-channel block DCT (paper section 3.1), so
``conv(x) == IDCT(conv(DCT(x)))``. :class:`FreqPointwiseConv2d` computes a wrapped
conv that way and multiplies the coefficients by per-channel masks in between, in one
of three modes (soft learned masks, hard rounded masks, fixed masks), whose rules are
in :mod:`tvm_freq.freq.mask_modes`. The conv's bias is added in the spatial domain
after the IDCT and crop, never masked, so an unpruned wrapper equals the conv exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..dct import block_grid, check_block
from ..macs import LayerMacs, masked_macs, pointwise_macs
from .mask_math import is_prefix_mask, prefix_masks
from .mask_modes import MaskMode, MaskSide, mask_rules
from .transforms import BasisModule, block_dct, block_idct, torch_basis

__all__ = ["Where", "WHERE", "MaskMode", "conv2d_skip_reason", "FreqPointwiseConv2d"]

Where = Literal["in", "out", "both"]
"""Which channels of a pointwise conv carry masks: inputs, outputs or both."""
WHERE = ("in", "out", "both")


def conv2d_skip_reason(module: nn.Module) -> str | None:
    """Why a module is not a plain ``nn.Conv2d`` that :class:`FreqPointwiseConv2d` can wrap.

    Eligible: ``nn.Conv2d`` with a 1x1 kernel, stride 1, groups 1, dilation 1 and
    padding 0.

    Parameters
    ----------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    str or None
        A short reason, e.g. ``"stride (2, 2) != 1"``, or ``None`` when eligible.
    """
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


def _check_wrap(conv: nn.Module, block_size: int, where: str, init: float) -> None:
    if isinstance(conv, FreqPointwiseConv2d):
        raise ValueError(f"cannot wrap {conv!r}: already wrapped")
    reason = conv2d_skip_reason(conv)
    if reason is not None:
        raise ValueError(f"cannot wrap {conv!r}: {reason}")
    check_block(block_size, "block size")
    if where not in WHERE:
        raise ValueError(f"where must be one of {WHERE}, got {where!r}")
    if not 0.0 <= init <= 1.0:
        raise ValueError(f"init must be in [0, 1], got {init}")


def _fcmask(learned: bool, channels: int, init: float, conv: nn.Conv2d) -> nn.Parameter | None:
    # One FCMask value per channel, on the conv weight's device and dtype; None if not learned.
    if not learned:
        return None
    w = conv.weight
    return nn.Parameter(torch.full((channels,), float(init), device=w.device, dtype=w.dtype))


def _coefs_needed(mask_in: torch.Tensor | None, mask_out: torch.Tensor | None, nc: int) -> int:
    # Truncation: output coefficient n depends only on input coefficient n, so
    # coefficients past the last one any channel keeps (on either side) are zero
    # and neither the DCT nor the IDCT computes them.
    m = nc
    for mask in (mask_in, mask_out):
        if mask is not None:
            nz = torch.nonzero(mask.detach().ne(0).any(dim=0))
            m = min(m, int(nz.max()) + 1 if nz.numel() else 0)
    return m


class FreqPointwiseConv2d(BasisModule):
    """A 1x1 conv computed as block DCT -> coefficient masks -> 1x1 conv -> IDCT -> crop.

    The wrapped conv's ``weight`` and ``bias`` become this module's parameters under
    the same names, so optimizers and state-dict keys of the weights do not change.

    Parameters
    ----------
    conv : torch.nn.Conv2d
        An eligible pointwise conv (see :func:`conv2d_skip_reason`).
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
    mode : MaskMode
        ``"soft"``: masks from FCMask, differentiable. ``"hard"``: FCMask masks rounded
        to 0/1 (prefix bands). ``"fixed"``: the masks given to :meth:`set_fixed_masks`.
        A string enum (compares equal to those strings; assigning a string works); the
        rules of each mode are in :mod:`tvm_freq.freq.mask_modes`.
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
        _check_wrap(conv, block_size, where, init)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.block_size, self.where, self.learn = int(block_size), where, learn
        self.num_coefs = self.block_size**2
        self.weight = conv.weight
        self.bias = conv.bias
        self.fcmask_in = _fcmask(learn and where in ("in", "both"), self.in_channels, init, conv)
        self.fcmask_out = _fcmask(learn and where in ("out", "both"), self.out_channels, init, conv)
        dev, dt = conv.weight.device, conv.weight.dtype
        self.register_buffer("basis", torch_basis(self.block_size, dt, dev), persistent=False)
        self.mode = MaskMode.SOFT if learn else MaskMode.FIXED
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
        self._fixed_in, self._fixed_out = self._as_mask(in_mask), self._as_mask(out_mask)
        self.mode = MaskMode.FIXED

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

    def _as_mask(self, mask: torch.Tensor | np.ndarray | None) -> torch.Tensor | None:
        # A private copy on the weight's device and dtype; None (unmasked) stays None.
        if mask is None:
            return None
        t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        return t.detach().to(device=self.weight.device, dtype=self.weight.dtype).clone()

    @property
    def mode(self) -> MaskMode:
        """Where the masks come from now; set it with a :class:`MaskMode` or its string."""
        return self._mode

    @mode.setter
    def mode(self, value: MaskMode | str) -> None:
        self._mode = MaskMode(value)

    def _sides(self) -> tuple[MaskSide, MaskSide]:
        nc = self.num_coefs
        return (
            MaskSide("input", self.in_channels, nc, self.fcmask_in, self._fixed_in),
            MaskSide("output", self.out_channels, nc, self.fcmask_out, self._fixed_out),
        )

    def masks(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The ``(in, out)`` masks the forward pass applies now; ``None`` means unmasked.

        Returns
        -------
        tuple of (torch.Tensor or None)
            ``[Cin, k*k]`` and ``[Cout, k*k]`` masks; differentiable in soft mode.
        """
        rules = mask_rules(self.mode)
        mask_in, mask_out = (rules.forward_mask(side) for side in self._sides())
        return mask_in, mask_out

    def hard_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """0/1 ``(in, out)`` masks as deployed: soft FCMask masks are rounded.

        Returns
        -------
        tuple of numpy.ndarray
            bool ``[Cin, k*k]`` and ``[Cout, k*k]``; all True where a side is unmasked.
        """
        rules = mask_rules(self.mode)
        mask_in, mask_out = (rules.deployed(side) for side in self._sides())
        return mask_in, mask_out

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
        rules = mask_rules(self.mode)
        kin, kout = (rules.counts(side) for side in self._sides())
        return kin, kout

    def squash_(self) -> FreqPointwiseConv2d:
        """Round learned masks to 0/1 and freeze them (hard mode). Fixed masks stay as they are.

        Returns
        -------
        FreqPointwiseConv2d
            ``self``.
        """
        if self.mode is MaskMode.SOFT:
            self.mode = MaskMode.HARD
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
        return masked_macs(hw[0], hw[1], self.block_size, mi, mo, batch)

    # -- state -------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        """Mode and fixed masks, saved in the state dict so checkpoints restore them.

        Returns
        -------
        dict
            ``mode``, ``block_size`` and the fixed masks that are set.
        """
        state: dict[str, Any] = {"mode": self.mode.value, "block_size": self.block_size}
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
        self._fixed_in = self._as_mask(state.get("fixed_in"))
        self._fixed_out = self._as_mask(state.get("fixed_out"))
        self.mode = state.get("mode", self.mode)

    def _apply(self, fn, recurse=True):
        # Keep the fixed masks (plain tensor attributes) on the module's device/dtype.
        super()._apply(fn, recurse)
        like = dict(device=self.weight.device, dtype=self.weight.dtype)
        self._fixed_in, self._fixed_out = (
            None if m is None else m.to(**like) for m in (self._fixed_in, self._fixed_out)
        )
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
            f"where={self.where!r}, mode={self.mode.value!r}, bias={self.bias is not None}"
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
        m = _coefs_needed(mask_in, mask_out, nc) if mask_rules(self.mode).truncates else nc
        bh, bw = block_grid(h, w, k)
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
