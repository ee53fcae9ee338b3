"""SpecNet modules: the spectral conv block, activation, pooling, head and twin conv.

:class:`SpectralConv2d` (FFT conv, threshold, spectral tanh; compact output),
:class:`SpectralTanh`, :class:`AvgPool` and :class:`ToSpatial` (both
representations), :class:`ConvAct` (spectral or spatial from the same code), plus the
model-wide switches that concern these modules: :func:`set_lowering` and
:func:`spectral_layers`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .autograd import BlockCfg, Piece, SpectralBlockFn
from .lowering import real_block, real_to_spatial
from .ops import (
    PAPER_ACTIVATION,
    Activation,
    check_activation,
    check_beta,
    conv_grid,
    conv_out_size,
    half,
    spectral_tanh,
)
from .storage import SpecMap

__all__ = [
    "DEFAULT_WORKSPACE_BYTES",
    "SpectralConv2d",
    "SpectralTanh",
    "AvgPool",
    "ToSpatial",
    "ConvAct",
    "set_lowering",
    "spectral_layers",
]

# Dense spectra of one block are materialised for at most this many bytes' worth of
# batch items at a time (SpectralConv2d.workspace_bytes), bounding the transient peak.
# 512 KiB keeps a training step's peak below the spatial twin's for the benchmark models,
# at some speed (more, smaller chunks; docs/specnet.md); GPUs want far more.
DEFAULT_WORKSPACE_BYTES = 512 << 10

Input = torch.Tensor | SpecMap | Sequence["torch.Tensor | SpecMap"]


def _as_list(x: Input) -> list[torch.Tensor | SpecMap]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _itemsize(inputs: Sequence[Any]) -> int:
    ref = next(t.values if isinstance(t, SpecMap) else t for t in inputs)
    return 16 if ref.dtype in (torch.float64, torch.complex128) else 8


def _same_padding(kernel_size: int, padding: int | None) -> int:
    # ``None`` means "same" padding for odd kernels: (k - 1) // 2 on each side.
    return (kernel_size - 1) // 2 if padding is None else padding


class SpectralConv2d(nn.Module):
    """SpecNet conv block: FFT conv, threshold ``|Y| <= beta -> 0``, fused activation.

    Takes a real spatial tensor ``[B, C, M, M]``, a :class:`SpecMap`, or a list of those
    (concatenated along channels, as in DenseNet) and returns a compact
    :class:`SpecMap`. Parameters are a spatial ``weight`` ``[C_out, C_in, k, k]`` and
    ``bias`` with the same names and shapes as ``nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    kernel_size : int
        Square kernel size ``k``.
    padding : int
        Zero padding, ``0 <= padding <= k - 1`` (default ``(k - 1) // 2``, "same").
    stride : int
        Stride, done by spectral decimation.
    beta : float
        Threshold, ``>= 0``.
    activation : {"spectral_tanh", "spatial_relu", None}
        Fused activation. ``"spectral_tanh"`` (the paper's, the default; alias
        ``"tanh"``): threshold, then ``tanh`` on the real and imaginary parts.
        ``"spatial_relu"`` (beyond the paper): ReLU in space inside the
        ``irfft2 -> crop -> rfft2`` round trip of the halo crop, then the threshold on
        the post-activation spectrum; no extra FFT in a padded or strided block, one
        FFT pair in a 1x1 unpadded one (which has no round trip). ``None``: identity.
    bias : bool
        Learn a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int | None = None,
        stride: int = 1,
        beta: float = 1.0,
        activation: Activation | str = PAPER_ACTIVATION,
        bias: bool = True,
    ):
        super().__init__()
        if kernel_size < 1 or in_channels < 1 or out_channels < 1 or stride < 1:
            raise ValueError("kernel_size, channels and stride must be >= 1")
        padding = _same_padding(kernel_size, padding)
        if not 0 <= padding <= kernel_size - 1:
            raise ValueError(f"padding must be in [0, {kernel_size - 1}], got {padding}")
        activation = check_activation(activation)
        check_beta(beta)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding, self.stride = kernel_size, padding, stride
        self.beta = float(beta)
        self.activation: Activation = activation
        ref = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self.weight = ref.weight
        self.bias = ref.bias
        self.lowering = False
        self.last_density: float | None = None
        self.record_stats = False
        self.stats: dict[str, float] = {}
        self.workspace_bytes = DEFAULT_WORKSPACE_BYTES

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"padding={self.padding}, stride={self.stride}, beta={self.beta}, "
            f"activation={self.activation}"
        )

    def _pieces(self, inputs: list[torch.Tensor | SpecMap]) -> tuple[list[Piece], int, int]:
        pieces, batch = [], None
        for x in inputs:
            if isinstance(x, SpecMap):
                p = Piece("compact", x.channels, x.grid, x.support, x.pool)
                b = x.batch
            elif isinstance(x, torch.Tensor):
                if x.dim() != 4:
                    raise ValueError(
                        f"expected a 4-D [B, C, H, W] input, got shape {tuple(x.shape)}"
                    )
                if x.is_complex():
                    raise ValueError("pass spectral inputs as SpecMap, not complex tensors")
                if x.shape[-1] != x.shape[-2]:
                    raise ValueError(f"only square inputs are supported, got {tuple(x.shape)}")
                p = Piece("spatial", x.shape[1], x.shape[-1], x.shape[-1], 1)
                b = x.shape[0]
            else:
                raise TypeError(f"unsupported input type {type(x).__name__}")
            if batch is not None and b != batch:
                raise ValueError("all inputs must have the same batch size")
            batch = b
            pieces.append(p)
        sizes = {p.out_support for p in pieces}
        if len(sizes) != 1:
            raise ValueError(f"concatenated inputs have different spatial sizes {sorted(sizes)}")
        size = sizes.pop()
        cin = sum(p.channels for p in pieces)
        if cin != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {cin}")
        if size + 2 * self.padding < self.kernel_size:
            raise ValueError(
                f"input of size {size} (padding {self.padding}) is smaller than the "
                f"{self.kernel_size}x{self.kernel_size} kernel"
            )
        return pieces, batch, size

    def _chunk(self, batch: int, grid: int, inputs: Sequence[Any]) -> int:
        # Batch items per workspace step: the largest dense spectrum of one item
        # (input, output or the stride-1 product) times a few live copies.
        ref = next(t.values if isinstance(t, SpecMap) else t for t in inputs)
        item = 16 if ref.dtype in (torch.float64, torch.complex128) else 8
        per_item = max(self.in_channels, self.out_channels) * grid * half(grid) * item
        return max(1, min(batch, self.workspace_bytes // max(1, per_item)))

    @property
    def pointwise(self) -> bool:
        """A 1x1, stride-1, unpadded conv: its output support is its input's, so it runs on
        the input's own grid, with no re-gridding and no halo to crop."""
        return self.kernel_size == 1 and self.padding == 0 and self.stride == 1

    def geometry(self, size: int, grids: Sequence[int] = ()) -> tuple[int, int, int]:
        """Return ``(grid, out_grid, out_support)`` for an input of support ``size``.

        Parameters
        ----------
        size : int
            Input support.
        grids : sequence of int
            Grids of the inputs (after pending pools); a pointwise conv runs on the
            largest one.

        Returns
        -------
        tuple of int
            Conv grid, grid of the stored output and output support; the last two are
            equal, since a block stores its output on its own support grid.
        """
        if self.pointwise and grids:
            grid = max(max(grids), size)
        else:
            grid = conv_grid(size, self.kernel_size, self.stride)
        out = conv_out_size(size, self.kernel_size, self.padding, self.stride)
        return grid, out, out

    def forward(self, x: Input) -> SpecMap:
        """Run the block.

        Parameters
        ----------
        x : torch.Tensor, SpecMap or list of them
            Input (a list is concatenated along channels).

        Returns
        -------
        SpecMap
            Compact output (or real-form output in lowering mode).
        """
        check_beta(self.beta)
        inputs = _as_list(x)
        pieces, batch, size = self._pieces(inputs)
        grid, out_grid, out_support = self.geometry(size, [p.eff_grid for p in pieces])
        if self.lowering:
            re, im = real_block(self, inputs, pieces, batch, grid, out_grid, out_support)
            return SpecMap(batch, self.out_channels, out_grid, out_support, re=re, im=im)
        cfg = BlockCfg(
            tuple(pieces), batch, self.in_channels, self.out_channels, self.kernel_size,
            self.padding, self.stride, grid, out_grid, out_support, self.beta, self.activation,
            self.pointwise, self._chunk(batch, grid, inputs), self.workspace_bytes,
            _itemsize(inputs), self.stats if self.record_stats else None,
        )  # fmt: skip
        tensors: list[torch.Tensor] = []
        for t in inputs:
            tensors += [t.values, t.bits] if isinstance(t, SpecMap) else [t]
        values, bits = SpectralBlockFn.apply(cfg, self.weight, self.bias, *tensors)
        out = SpecMap(batch, self.out_channels, out_grid, out_support, values=values, bits=bits)
        self.last_density = out.density
        return out


class SpectralTanh(nn.Module):
    """``f(a + ib) = tanh(a) + i tanh(b)`` on complex tensors or :class:`SpecMap`.

    On a compact map it acts on the stored values only (``tanh(0) = 0`` keeps sparsity).
    """

    def forward(self, z: torch.Tensor | SpecMap) -> torch.Tensor | SpecMap:
        """Apply the activation.

        Parameters
        ----------
        z : torch.Tensor or SpecMap
            Complex spectrum.

        Returns
        -------
        torch.Tensor or SpecMap
            Same kind as the input.
        """
        if isinstance(z, SpecMap):
            if z.is_compact:
                return replace(z, values=spectral_tanh(z.values))
            return replace(z, re=torch.tanh(z.re), im=torch.tanh(z.im))
        if not z.is_complex():
            raise ValueError("SpectralTanh expects a complex tensor or a SpecMap")
        return spectral_tanh(z)


class AvgPool(nn.Module):
    """Average pooling with kernel = stride = ``factor`` for either representation.

    Spatial tensors go through ``F.avg_pool2d``; a :class:`SpecMap` is marked for pooling
    and its consumer applies it in frequency (box filter + decimation) before its crop.

    Parameters
    ----------
    factor : int
        Pooling factor.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 1:
            raise ValueError("factor must be >= 1")
        self.factor = factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def forward(self, x: Any) -> Any:
        """Pool.

        Parameters
        ----------
        x : torch.Tensor, SpecMap or list of them
            Input.

        Returns
        -------
        torch.Tensor, SpecMap or list of them
            Pooled input of the same kind.
        """
        if isinstance(x, (list, tuple)):
            return [self(t) for t in x]
        if isinstance(x, SpecMap):
            # Two non-overlapping box poolings compose exactly into one.
            return replace(x, pool=x.pool * self.factor)
        return F.avg_pool2d(x, self.factor)


class ToSpatial(nn.Module):
    """Head: spectral maps back to real space (``irfft2``, pending pool, crop).

    Identity on spatial tensors; lists are concatenated along channels.
    """

    def forward(self, x: Any) -> torch.Tensor:
        """Convert.

        Parameters
        ----------
        x : torch.Tensor, SpecMap or list of them
            Input.

        Returns
        -------
        torch.Tensor
            Real ``[B, C, H, W]``.
        """
        if isinstance(x, (list, tuple)):
            return torch.cat([self(t) for t in x], 1)
        if isinstance(x, SpecMap):
            return x.to_spatial() if x.is_compact else real_to_spatial(x, self)
        return x


# --------------------------------------------------------------------------- spatial twin path


class _CatConv2dFn(torch.autograd.Function):
    # cat + conv that saves the pieces, not the concatenation (memory-efficient DenseNet,
    # Pleiss et al.), so the spatial twin stores what its spectral twin stores.
    @staticmethod
    def forward(ctx, stride, padding, weight, bias, *pieces):
        x = torch.cat(pieces, 1)
        ctx.stride, ctx.padding = stride, padding
        ctx.save_for_backward(weight, bias, *pieces)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, gy):
        weight, bias, *pieces = ctx.saved_tensors
        x = torch.cat(pieces, 1)
        gw = gb = None
        if ctx.needs_input_grad[2]:
            gw = torch.nn.grad.conv2d_weight(x, weight.shape, gy, ctx.stride, ctx.padding)
        if bias is not None and ctx.needs_input_grad[3]:
            gb = gy.sum((0, 2, 3))
        gx = [None] * len(pieces)
        if any(ctx.needs_input_grad[4:]):
            g = torch.nn.grad.conv2d_input(x.shape, weight, gy, ctx.stride, ctx.padding)
            gx = list(torch.split(g, [p.shape[1] for p in pieces], 1))
        return (None, None, gw, gb, *gx)


class ConvAct(nn.Module):
    """Conv + activation, spectral or spatial from the same code.

    ``spectral=True``: :class:`SpectralConv2d` with its fused ``activation`` (the
    paper's spectral tanh by default). ``spectral=False``: ``nn.Conv2d`` followed by
    ReLU or tanh. Both have ``conv.weight`` and ``conv.bias``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
        Conv shape.
    padding : int, optional
        Padding (default "same").
    stride : int
        Stride.
    spectral : bool
        Which path.
    beta : float
        Threshold of the spectral path.
    spatial_act : {"relu", "tanh"}
        Activation of the spatial path.
    activation : {"spectral_tanh", "spatial_relu", None}
        Activation of the spectral path (:class:`SpectralConv2d`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int | None = None,
        stride: int = 1,
        *,
        spectral: bool = True,
        beta: float = 1.0,
        spatial_act: str = "relu",
        activation: Activation | str = PAPER_ACTIVATION,
    ):
        super().__init__()
        padding = _same_padding(kernel_size, padding)
        activation = check_activation(activation)  # also on the twin: typos fail early
        self.spectral = spectral
        if spectral:
            self.conv: nn.Module = SpectralConv2d(
                in_channels, out_channels, kernel_size, padding, stride, beta, activation
            )
        else:
            if spatial_act not in ("relu", "tanh"):
                raise ValueError(f"spatial_act must be 'relu' or 'tanh', got {spatial_act!r}")
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.act: Callable[[torch.Tensor], torch.Tensor] = (
            torch.relu if spatial_act == "relu" else torch.tanh
        )
        self.record_stats = False
        self.stats: dict[str, float] = {}

    def forward(self, x: Input) -> Any:
        """Apply conv + activation.

        Parameters
        ----------
        x : torch.Tensor, SpecMap or list of them
            Input (lists are concatenated along channels).

        Returns
        -------
        torch.Tensor or SpecMap
            Output.
        """
        if self.spectral:
            self.conv.record_stats = self.record_stats
            out = self.conv(x)
            if self.record_stats:
                self.stats = dict(self.conv.stats)
            return out
        xs = _as_list(x)
        if any(isinstance(t, SpecMap) for t in xs):
            raise TypeError("a spatial ConvAct got a spectral input")
        conv = self.conv
        if len(xs) == 1:
            y = conv(xs[0])
        else:
            y = _CatConv2dFn.apply(conv.stride, conv.padding, conv.weight, conv.bias, *xs)
        if self.record_stats:
            self.stats = {"rms": float(y.detach().square().mean().sqrt())}
        return self.act(y)


def set_lowering(model: nn.Module, on: bool = True) -> nn.Module:
    """Switch spectral blocks to their ``torch.export``-friendly real-arithmetic path.

    In lowering mode spectra travel as dense real/imaginary float tensors and every
    transform is a matmul against constant DFT matrices (:mod:`tvm_freq.dft_matrices`),
    so an exported graph holds only standard ops. Kernel spectra and DFT matrices are
    registered as non-persistent buffers on the first (eager) call, so run the model
    once eagerly before exporting. Inference only (no compact storage, no autograd
    Function).

    Parameters
    ----------
    model : nn.Module
        Model to switch (in place).
    on : bool
        Enable or disable.

    Returns
    -------
    nn.Module
        ``model``.
    """
    for m in model.modules():
        if isinstance(m, SpectralConv2d):
            m.lowering = on
            if not on:
                for name in [n for n in m._buffers if n.startswith("_lower_")]:
                    del m._buffers[name]
    return model


def spectral_layers(model: nn.Module) -> list[tuple[str, SpectralConv2d]]:
    """List the spectral blocks of a model.

    Parameters
    ----------
    model : nn.Module
        Any model.

    Returns
    -------
    list of (str, SpectralConv2d)
        Qualified names and modules.
    """
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SpectralConv2d)]
