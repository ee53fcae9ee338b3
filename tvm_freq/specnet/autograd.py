"""The spectral conv block as one autograd Function, and its dense reference.

:class:`SpectralBlockFn` runs conv -> threshold -> (tanh) on batch chunks and saves
only compact maps for backward (see :mod:`tvm_freq.specnet`, "Storage and gradients");
:class:`BlockCfg` is the static description of one call and :class:`Piece` that of
one input. :func:`spectral_conv2d_reference` is the same block in plain autograd.

With ``activation="spatial_relu"`` (beyond the paper) the block is conv -> ReLU in space
-> threshold instead: the ReLU runs inside the ``irfft2 -> crop -> rfft2`` round trip
that the halo crop already makes, the post-activation spectrum is stored compactly as
the paper's block stores its output, and backward recomputes the ReLU mask from the
stored input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from .ops import (
    Activation,
    check_activation,
    conv_grid,
    conv_out_size,
    half,
    kernel_spectrum,
    phase_matrix,
    spectral_avg_pool2d,
    spectral_crop,
    spectral_decimate,
    spectral_tanh,
    spectral_threshold,
)
from .storage import hermitian_fill, pack_mask, redundant_mask, unpack_mask

__all__ = ["Activation", "Piece", "BlockCfg", "SpectralBlockFn", "spectral_conv2d_reference"]


@dataclass(frozen=True)
class Piece:
    """Geometry of one block input: spatial tensor or compact map, with its pending pool."""

    kind: Literal["spatial", "compact"]
    channels: int
    grid: int
    support: int
    pool: int

    @property
    def out_support(self) -> int:
        return self.support // self.pool

    @property
    def eff_grid(self) -> int:
        # Grid after the pending pool (a pool that does not divide the grid is done in
        # space after the crop, leaving the support as the grid).
        if self.pool == 1:
            return self.grid
        return self.grid // self.pool if self.grid % self.pool == 0 else self.out_support


@dataclass(frozen=True)
class BlockCfg:
    """Static description of one call of :class:`SpectralBlockFn` (geometry, threshold, chunks)."""

    pieces: tuple[Piece, ...]
    batch: int
    cin: int
    cout: int
    kernel: int
    padding: int
    stride: int
    grid: int
    out_grid: int
    out_support: int
    beta: float
    activation: Activation
    keep_halo: bool
    chunk: int  # batch items per step of the block's dense workspace
    workspace: int  # bytes
    itemsize: int  # bytes per complex entry
    # Filled with {"rms": ...} when given (see calibrate_): the pre-threshold RMS of |Y|,
    # or for "spatial_relu" the RMS of the pre-activation map over pixels, as the twin's.
    stats: dict | None = field(default=None, compare=False)


class _Inputs:
    """The block's inputs, sliceable by batch chunk.

    Compact values are row-major over ``[B, C, G, H]``, so one batch item's entries are
    contiguous; offsets come from the unpacked mask (1 byte per entry, transient).
    """

    def __init__(self, cfg: BlockCfg, tensors: Sequence[torch.Tensor]):
        self.items: list[tuple] = []
        i = 0
        for piece in cfg.pieces:
            if piece.kind == "spatial":
                self.items.append(("spatial", tensors[i]))
                i += 1
                continue
            values, bits = tensors[i], tensors[i + 1]
            i += 2
            mask = unpack_mask(bits, (cfg.batch, piece.channels, piece.grid, half(piece.grid)))
            counts = mask.reshape(cfg.batch, -1).sum(1)
            offsets = [0, *torch.cumsum(counts, 0).tolist()]
            self.items.append(("compact", values, mask, offsets))

    def chunk(self, b0: int, b1: int, needs: Sequence[bool] = ()) -> tuple[list, list]:
        """Slices for batch items ``[b0, b1)``; with ``needs``, fresh leaves for autograd."""
        parts, leaves = [], []
        for j, item in enumerate(self.items):
            need = bool(needs) and needs[j]
            if item[0] == "spatial":
                t = item[1][b0:b1]
                mask = None
            else:
                _, values, mask, off = item
                t, mask = values[off[b0] : off[b1]], mask[b0:b1]
            if need:
                t = t.detach().requires_grad_(True)
                leaves.append(t)
            parts.append((t, mask))
        return parts, leaves


def _front(cfg: BlockCfg, parts: Sequence[tuple[torch.Tensor, torch.Tensor | None]]):
    """Dense input spectrum on the block's grid from (compact) input slices; linear."""
    out = []
    for piece, (t, mask) in zip(cfg.pieces, parts, strict=True):
        if piece.kind == "spatial":
            out.append(torch.fft.rfft2(t, s=(cfg.grid, cfg.grid), norm="ortho"))
            continue
        grid, support = piece.grid, piece.support
        z = hermitian_fill(t.new_zeros(mask.shape).masked_scatter(mask, t), grid)
        if piece.pool > 1:
            if grid % piece.pool == 0:
                z = spectral_avg_pool2d(z, piece.pool, grid)
                grid //= piece.pool
            else:  # pool in space after the crop; same linear map
                x = torch.fft.irfft2(z, s=(grid, grid), norm="ortho")[..., :support, :support]
                x = F.avg_pool2d(x, piece.pool)
                out.append(torch.fft.rfft2(x, s=(cfg.grid, cfg.grid), norm="ortho"))
                continue
            support //= piece.pool
        if cfg.keep_halo and grid == cfg.grid:
            out.append(z)  # 1x1 conv: runs on its input's own grid, nothing to re-grid
        else:
            out.append(spectral_crop(z, grid, support, cfg.grid))
    return out[0] if len(out) == 1 else torch.cat(out, 1)


def _freq_major(t: torch.Tensor) -> torch.Tensor:
    # [A, C, G, H] -> contiguous [G*H, A, C]: per-frequency matrices for a batched GEMM.
    # (torch.einsum on complex operands takes a very slow path on CPU; bmm does not.)
    a, c, g, h = t.shape
    return t.permute(2, 3, 0, 1).reshape(g * h, a, c).resolve_conj().contiguous()


def _from_freq_major(t: torch.Tensor, grid: int) -> torch.Tensor:
    f, a, c = t.shape
    return t.reshape(grid, f // grid, a, c).permute(2, 3, 0, 1)


class _KernelSlices:
    """The per-frequency GEMM against the kernel spectrum ``K[f] = (P @ W)[f]`` (``[C_in,
    C_out]`` per frequency), built in frequency slices from the spatial kernel so that at
    most a workspace-sized piece of ``K`` exists, plus its adjoints. A 1x1 unpadded kernel
    has the same spectrum at every frequency, so it is a single plain GEMM."""

    def __init__(self, weight: torch.Tensor, cfg: BlockCfg, dtype: torch.dtype, fchunk: int):
        k, ci, co = cfg.kernel, cfg.cin, cfg.cout
        self.shape = (ci, co)
        self.dtype = dtype
        self.w = weight.detach().permute(2, 3, 1, 0).reshape(k * k, ci * co)
        self.uniform = k == 1 and cfg.padding == 0
        if self.uniform:
            self.wc = self.w.view(ci, co).to(dtype)
            return
        pr, pi = phase_matrix(k, cfg.grid, cfg.padding)
        self.pr = pr.to(device=weight.device, dtype=weight.dtype)
        self.pi = pi.to(device=weight.device, dtype=weight.dtype)
        n = pr.shape[0]
        self.slices = [(f, min(f + fchunk, n)) for f in range(0, n, fchunk)]
        # One slice: compute once and reuse across batch chunks.
        self.cache: torch.Tensor | None = None
        if len(self.slices) == 1:
            self.cache = self._get(0, n)

    def _get(self, f0: int, f1: int) -> torch.Tensor:
        if self.cache is not None:
            return self.cache
        re, im = self.pr[f0:f1] @ self.w, self.pi[f0:f1] @ self.w
        return torch.complex(re, im).to(self.dtype).view(f1 - f0, *self.shape)

    def forward(self, Xf: torch.Tensor) -> torch.Tensor:
        """``Y[f] = X[f] K[f]`` for ``Xf`` of shape ``[F, b, C_in]``."""
        nf, b, ci = Xf.shape
        if self.uniform:
            return (Xf.reshape(nf * b, ci) @ self.wc).view(nf, b, self.shape[1])
        Yf = Xf.new_empty(nf, b, self.shape[1])
        for f0, f1 in self.slices:
            torch.bmm(Xf[f0:f1], self._get(f0, f1), out=Yf[f0:f1])
        return Yf

    def backward(
        self, Xf: torch.Tensor, GYf: torch.Tensor, need_x: bool, need_w: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``dX[f] = dY[f] K[f]^H`` and the kernel gradient on the taps, ``[k*k, C_in*C_out]``.

        PyTorch's convention for complex gradients gives ``dK[f] = X[f]^H dY[f]``, and for
        the real taps ``dW = Re(conj(P)^T dK)``.
        """
        nf, b, ci = Xf.shape
        co = self.shape[1]
        if self.uniform:
            gx = (GYf.reshape(nf * b, co) @ self.wc.T).view(nf, b, ci) if need_x else None
            gw = None
            if need_w:
                gk = Xf.reshape(nf * b, ci).conj().T @ GYf.reshape(nf * b, co)
                gw = gk.real.reshape(1, ci * co).to(self.w.dtype)
            return gx, gw
        gx = Xf.new_empty(nf, b, ci) if need_x else None
        gw = None
        XfH = Xf.conj()
        for f0, f1 in self.slices:
            K = self._get(f0, f1)
            if need_x:
                torch.bmm(GYf[f0:f1], K.conj().transpose(1, 2), out=gx[f0:f1])
            if need_w:
                gk = torch.bmm(XfH[f0:f1].transpose(1, 2), GYf[f0:f1]).reshape(f1 - f0, -1)
                g = self.pr[f0:f1].T @ gk.real + self.pi[f0:f1].T @ gk.imag
                gw = g if gw is None else gw + g
        return gx, gw


def _project_output(cfg: BlockCfg, Y: torch.Tensor) -> torch.Tensor:
    # Stride (decimation), then drop the halo of the linear convolution: the stored map is
    # the spectrum of the block's output on its own support grid (linear in Y).
    Y = spectral_decimate(Y, cfg.stride, cfg.grid)
    return spectral_crop(Y, cfg.grid // cfg.stride, cfg.out_support, cfg.out_grid)


def _conv_core(cfg: BlockCfg, Xf: torch.Tensor, ks: _KernelSlices, bias: torch.Tensor | None):
    Y = _project_output(cfg, _from_freq_major(ks.forward(Xf), cfg.grid))
    if bias is not None:
        # A constant b on the G' x G' grid has orthonormal DC coefficient b * G'.
        # In place is safe: Y is a fresh tensor and this runs without autograd.
        Y[..., 0, 0] += (bias * cfg.out_grid).to(Y.dtype)
    return Y


def _pre_activation(cfg: BlockCfg, Y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # "spatial_relu": stride, then the inverse half of the halo crop's round trip; the
    # cropped map plus bias is the pre-activation in space (the twin's conv output).
    Y = spectral_decimate(Y, cfg.stride, cfg.grid)
    g = cfg.grid // cfg.stride
    a = torch.fft.irfft2(Y, s=(g, g), norm="ortho")[..., : cfg.out_support, : cfg.out_support]
    return a if bias is None else a + bias.to(a.dtype)[:, None, None]


def _relu_spectrum(cfg: BlockCfg, a: torch.Tensor) -> torch.Tensor:
    # The forward half of the same round trip, applied to the activated map.
    return torch.fft.rfft2(torch.relu(a), s=(cfg.out_grid, cfg.out_grid), norm="ortho")


def _relu_adjoint(
    cfg: BlockCfg, ks: _KernelSlices, Xf: torch.Tensor, bias: torch.Tensor | None,
    GY: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    # Gradients w.r.t. the conv-grid product Y and the bias, for "spatial_relu". The ReLU
    # mask is not stored: Y is recomputed from the (rebuilt) input spectrum, one more
    # GEMM per chunk, and autograd of the round trip gives the adjoint at that point.
    Y = _from_freq_major(ks.forward(Xf), cfg.grid).detach().requires_grad_(True)
    leaves = [Y]
    b = None
    if bias is not None:
        b = bias.detach().requires_grad_(True)
        leaves.append(b)
    with torch.enable_grad():
        Z = _relu_spectrum(cfg, _pre_activation(cfg, Y, b))
    grads = torch.autograd.grad(Z, leaves, GY)
    return grads[0], (grads[1] if b is not None else None)


def _chunks(cfg: BlockCfg):
    return [(b, min(b + cfg.chunk, cfg.batch)) for b in range(0, cfg.batch, cfg.chunk)]


def _fchunk(cfg: BlockCfg) -> int:
    # Frequencies per kernel-spectrum slice [f, C_in, C_out], within the same workspace.
    nf = cfg.grid * half(cfg.grid)
    return max(1, min(nf, cfg.workspace // (cfg.cin * cfg.cout * cfg.itemsize)))


class SpectralBlockFn(torch.autograd.Function):
    """conv -> threshold -> (tanh), or conv -> spatial ReLU -> threshold, saving only
    compact maps (see module docstring).

    Dense spectra exist only for ``cfg.chunk`` batch items at a time, and the kernel
    spectrum only in frequency slices, in forward and backward: the transient workspace
    is bounded (``SpectralConv2d.workspace_bytes``).
    """

    @staticmethod
    def forward(ctx, cfg: BlockCfg, weight, bias, *inputs):
        with torch.no_grad():
            src = _Inputs(cfg, inputs)
            ks = None
            masks, vals = [], []
            sq, count = 0.0, 0
            relu = cfg.activation == "spatial_relu"
            # Only unique entries are stored; consumers rebuild the rest (hermitian_fill).
            unique = ~redundant_mask(cfg.out_grid, weight.device)
            for b0, b1 in _chunks(cfg):
                parts, _ = src.chunk(b0, b1)
                Xf = _freq_major(_front(cfg, parts))
                if ks is None:
                    ks = _KernelSlices(weight, cfg, Xf.dtype, _fchunk(cfg))
                if relu:
                    a = _pre_activation(cfg, _from_freq_major(ks.forward(Xf), cfg.grid), bias)
                    if cfg.stats is not None:
                        sq, count = sq + float(a.square().sum()), count + a.numel()
                    Y = _relu_spectrum(cfg, a)
                    del a
                else:
                    Y = _conv_core(cfg, Xf, ks, bias)
                del Xf
                mag = Y.abs()
                if cfg.stats is not None and not relu:
                    sq, count = sq + float(mag.square().sum()), count + mag.numel()
                mask = (mag > cfg.beta) & unique
                del mag
                v = Y[mask]
                vals.append(spectral_tanh(v) if cfg.activation == "spectral_tanh" else v)
                masks.append(mask)
                del Y
            values = vals[0] if len(vals) == 1 else torch.cat(vals)
            bits = pack_mask(masks[0] if len(masks) == 1 else torch.cat(masks))
            del vals, masks, ks
            if cfg.stats is not None:
                cfg.stats["rms"] = (sq / max(1, count)) ** 0.5
        ctx.cfg = cfg
        ctx.mark_non_differentiable(bits)
        ctx.save_for_backward(weight, bias, values, bits, *inputs)
        return values, bits

    @staticmethod
    def backward(ctx, g_values, _g_bits):
        cfg: BlockCfg = ctx.cfg
        weight, bias, values, bits, *inputs = ctx.saved_tensors
        out_shape = (cfg.batch, cfg.cout, cfg.out_grid, half(cfg.out_grid))
        relu = cfg.activation == "spatial_relu"
        if cfg.activation == "spectral_tanh":
            # tanh' = 1 - tanh^2, per real/imag part, from the stored outputs.
            g_values = torch.complex(
                g_values.real * (1 - values.real.square()),
                g_values.imag * (1 - values.imag.square()),
            )
        out_mask = unpack_mask(bits, out_shape)
        out_off = [0, *torch.cumsum(out_mask.reshape(cfg.batch, -1).sum(1), 0).tolist()]
        src = _Inputs(cfg, inputs)
        # Which of the flat inputs get gradients: compact values (not bits) and spatial x.
        flat_need = [
            ctx.needs_input_grad[3 + j] and t.dtype != torch.uint8 for j, t in enumerate(inputs)
        ]
        piece_need, j = [], 0
        for piece in cfg.pieces:
            piece_need.append(flat_need[j])
            j += 1 if piece.kind == "spatial" else 2
        need_w = ctx.needs_input_grad[1]
        g_bias = None
        if bias is not None and ctx.needs_input_grad[2]:
            g_bias = torch.zeros_like(bias)
        g_taps = None
        ks = None
        g_pieces: list[list[torch.Tensor]] = [[] for _ in cfg.pieces]
        adjoints: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for b0, b1 in _chunks(cfg):
            # Dropped entries get zero gradient: the a.e. derivative of the hard threshold.
            m = out_mask[b0:b1]
            GY = g_values.new_zeros(m.shape).masked_scatter(m, g_values[out_off[b0] : out_off[b1]])
            with torch.enable_grad():
                parts, leaves = src.chunk(b0, b1, piece_need)
                Xf = _freq_major(_front(cfg, parts))
            if ks is None:
                ks = _KernelSlices(weight, cfg, Xf.dtype, _fchunk(cfg))
            if relu:
                GY, gb = _relu_adjoint(cfg, ks, Xf.detach(), bias, GY)
                if g_bias is not None:
                    g_bias += gb
            elif g_bias is not None:
                g_bias += (GY[..., 0, 0].real.sum(0) * cfg.out_grid).to(bias.dtype)
            if not relu and (cfg.stride > 1 or cfg.grid != cfg.out_grid):
                # Adjoint of the linear projection (stride, halo crop).
                # Autograd of the projection at a zero input; its graph is built once per
                # chunk length and replayed (retain_graph) for the other chunks.
                n = b1 - b0
                if n not in adjoints:
                    pre = (n, cfg.cout, cfg.grid, half(cfg.grid))
                    dummy = torch.zeros(pre, dtype=GY.dtype, device=GY.device, requires_grad=True)
                    with torch.enable_grad():
                        adjoints[n] = (dummy, _project_output(cfg, dummy))
                dummy, proj = adjoints[n]
                (GY,) = torch.autograd.grad(proj, dummy, GY, retain_graph=True)
            GYf = _freq_major(GY)
            del GY
            gXf, g = ks.backward(Xf.detach(), GYf, bool(leaves), need_w)
            if g is not None:
                g_taps = g if g_taps is None else g_taps + g
            if leaves:
                grads = torch.autograd.grad(Xf, leaves, gXf)
                it = iter(grads)
                for k, need in enumerate(piece_need):
                    if need:
                        g_pieces[k].append(next(it))
            del Xf, GYf, gXf
        del adjoints
        g_weight = None
        if need_w:
            k = cfg.kernel
            g_weight = g_taps.reshape(k, k, cfg.cin, cfg.cout).permute(3, 2, 0, 1).contiguous()
        g_flat: list[torch.Tensor | None] = []
        for piece, need, gs in zip(cfg.pieces, piece_need, g_pieces, strict=True):
            g = (gs[0] if len(gs) == 1 else torch.cat(gs)) if need else None
            g_flat += [g] if piece.kind == "spatial" else [g, None]
        return (None, g_weight, g_bias, *g_flat)


def spectral_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    padding: int = 0,
    stride: int = 1,
    beta: float = 0.0,
    activation: Activation | str = "spectral_tanh",
    in_grid: int | None = None,
    in_support: int | None = None,
) -> torch.Tensor:
    """Plain-autograd dense implementation of one spectral block (for tests).

    Parameters
    ----------
    x : torch.Tensor
        Real spatial input ``[B, C, M, M]`` or, with ``in_grid``, a complex half spectrum
        ``[B, C, in_grid, in_grid // 2 + 1]`` supported on ``in_support``.
    weight, bias : torch.Tensor
        Spatial kernel ``[C_out, C_in, k, k]`` and optional bias.
    padding, stride : int
        As in ``nn.Conv2d``.
    beta : float
        Threshold.
    activation : {"spectral_tanh", "spatial_relu", None}
        The paper's spectral tanh after the threshold (alias ``"tanh"``), the spatial
        ReLU before it (beyond the paper), or none.
    in_grid, in_support : int, optional
        Geometry of a spectral ``x``.

    Returns
    -------
    torch.Tensor
        Dense complex output spectrum ``[B, C_out, G', G' // 2 + 1]``.
    """
    activation = check_activation(activation)
    k = weight.shape[-1]
    if in_grid is None:
        support = x.shape[-1]
        grid = conv_grid(support, k, stride)
        X = torch.fft.rfft2(x, s=(grid, grid), norm="ortho")
    else:
        support = in_grid if in_support is None else in_support
        grid = conv_grid(support, k, stride)
        X = spectral_crop(x, in_grid, support, grid)
    Y = torch.einsum("bihw,oihw->bohw", X, kernel_spectrum(weight, grid, padding).to(X.dtype))
    out = conv_out_size(support, k, padding, stride)
    if activation == "spatial_relu":
        g = grid // stride
        a = torch.fft.irfft2(spectral_decimate(Y, stride, grid), s=(g, g), norm="ortho")
        a = a[..., :out, :out]
        if bias is not None:
            a = a + bias[:, None, None]
        Y = torch.fft.rfft2(torch.relu(a), norm="ortho")
        return spectral_threshold(Y, beta)
    Y = spectral_decimate(Y, stride, grid)
    Y = spectral_crop(Y, grid // stride, out, out)
    if bias is not None:
        dc = torch.zeros_like(Y)
        dc[..., 0, 0] = 1
        Y = Y + dc * (bias * out).to(Y.dtype)[:, None, None]
    Y = spectral_threshold(Y, beta)
    return spectral_tanh(Y) if activation == "spectral_tanh" else Y
