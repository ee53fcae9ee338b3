"""SpecNet (Guan et al.): convolution and activation in the FFT domain, stored sparsely.

Representation
--------------
A spectral feature map (:class:`SpecMap`) is the orthonormal ``rfft2`` of a real
``support x support`` map zero-padded at the bottom/right to a ``grid x grid`` FFT grid,
so it has ``grid x (grid // 2 + 1)`` complex entries per channel (conjugate symmetry
halves the last axis). Between blocks it travels *compactly*: the complex entries
that survived the threshold (``values``, row-major over ``[B, C, grid, grid//2+1]``)
plus a packed bitmask of where they are (``bits``, one bit per entry). The half spectrum
still repeats itself in column 0 and (even grids) the Nyquist column, where row ``r`` is
the conjugate of row ``G - r``; those redundant entries (:func:`redundant_mask`, about
``G`` of the ``G (G/2 + 1)`` per channel, and low frequencies, so kept more often than
most) are never stored and are rebuilt on densifying (:func:`hermitian_fill`).

Conv block (Algorithm 1 of the paper, :class:`SpectralConv2d`)
---------------------------------------------------------------
For an input supported on ``M x M`` and a ``k x k`` kernel with padding ``p`` the block

1. builds the input spectrum on the linear-convolution grid ``G = M + k - 1`` (rounded
   up to a multiple of the stride). A spatial input is zero-padded and ``rfft2``-ed; a
   spectral input is *not* re-transformed from scratch but cropped (see below);
2. multiplies by the kernel spectrum and sums over input channels: a per-frequency
   complex GEMM ``Y[b, o, f] = sum_i X[b, i, f] K[o, i, f]``. ``K`` is the unnormalised
   ``rfft2`` of the (flipped, centred) spatial kernel, which stays the stored parameter
   (the paper keeps kernels spatial too). With ``G >= M + p`` there is no wrap-around,
   so ``irfft2(Y)`` restricted to ``[0, M + 2p - k + 1)^2`` is exactly ``nn.Conv2d``
   with the same padding; the rest of the grid holds the halo of the full linear
   convolution;
3. stride ``s``: decimation in frequency (the spectrum of ``y[::s, ::s]`` is the mean
   of the ``s x s`` spectral replicas), giving grid ``G / s``;
4. crops the halo of the linear convolution: the output is projected onto its own support
   ``M' x M'`` and stored on that grid, ``rfft2(irfft2(Y)[:M', :M'])`` (storing the halo
   would cost entries that every consumer crops away);
5. adds the bias (a constant map is a DC term), thresholds (``|Y| <= beta -> 0``) and
   applies the spectral tanh ``f(a + ib) = tanh(a) + i tanh(b)``, which keeps zeros at
   zero (sparsity) and conjugate symmetry (the inverse transform stays real).

Bounded spatial size
--------------------
A spectral input lives on its own support grid ``M x M``; the next block re-grids it onto
its linear-convolution grid, ``X = rfft2(irfft2(Z), s=(G, G))`` (zero padding in the
spectral domain). Crop (step 4) and re-gridding are fixed linear maps of the spectrum,
evaluated with inverse/forward FFT pairs because that is ``O(G^2 log G)`` instead of a
dense ``G^2 x G^2`` operator; backward recomputes the re-gridding from the compact input
and applies the adjoint of the crop, so no dense or spatial tensor is ever stored.
Spatial size therefore stays at the "same" convolution size. A 1x1 unpadded conv needs
neither: it runs on its input's grid (its kernel spectrum is constant: one plain GEMM).
Average pooling (:class:`AvgPool`) is done in frequency (box-filter product +
decimation) and folded lazily into the next consumer.

Storage and gradients
---------------------
:class:`SpectralConv2d` is one :class:`torch.autograd.Function`. What it saves for
backward is exactly: its compact input (the previous block's ``values`` and ``bits``,
the same tensors, so they are stored once), its compact output (``values``, ``bits``),
the spatial kernel and bias. Backward rebuilds the dense input spectrum from the
compact input (cheap, linear) and uses the stored output for the tanh derivative
(``1 - tanh^2`` from the kept values). The resulting gradient is the exact gradient of
the thresholded forward; with ``beta = 0`` nothing is dropped and it equals autograd of
the plain dense implementation (:func:`spectral_conv2d_reference`). What is approximate
for ``beta > 0`` (relative to the un-thresholded network) is:

* entries with ``|Y| <= beta`` carry zero gradient (the a.e. derivative of the hard
  threshold; no straight-through estimator), and
* the next block's input, hence its kernel gradient ``dL/dK = sum_b conj(X) dL/dY``,
  sees the dropped entries as zeros.

Dense spectra exist only transiently, for a batch chunk at a time, and the kernel
spectrum only in frequency slices (``SpectralConv2d.workspace_bytes``, default
:data:`DEFAULT_WORKSPACE_BYTES`), which bounds the block's working memory.

Scale of beta
-------------
Feature maps use the orthonormal FFT, so by Parseval a spectral entry is on the scale of
a pixel; ``beta`` is compared with ``|Y|`` before the tanh. Without batch norm the
magnitudes are set by the initialisation: :func:`calibrate_` (LSUV) rescales every
block to unit pre-activation RMS on a data batch, so that ``beta`` in ``[0.5, 1.5]`` drops
a share of the entries rather than all of them (the benchmark reports the kept share).

Spatial twins
-------------
The models are written once. ``spectral=False`` swaps :class:`SpectralConv2d` for
``nn.Conv2d`` + ReLU (or tanh); pooling (:class:`AvgPool`) and the head
(:class:`ToSpatial`) work on either representation, so the twins share parameter
names and shapes (their state dicts are interchangeable). Batch norm is removed, as
in the paper, and pooling is average pooling in both twins (max pooling has no
spectral counterpart).

Only square inputs are supported.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SpecMap",
    "pack_mask",
    "unpack_mask",
    "kernel_spectrum",
    "spectral_tanh",
    "spectral_threshold",
    "spectral_decimate",
    "spectral_avg_pool2d",
    "spectral_crop",
    "redundant_mask",
    "unique_entries",
    "hermitian_fill",
    "conv_grid",
    "spectral_conv2d_reference",
    "SpectralConv2d",
    "SpectralTanh",
    "AvgPool",
    "ToSpatial",
    "ConvAct",
    "SpecLeNet",
    "SpecAlexNet",
    "SpecVGG16",
    "SpecDenseNet",
    "SPECNET_NAMES",
    "get_specnet",
    "spectral_layers",
    "set_beta",
    "set_workspace",
    "set_lowering",
    "calibrate_",
    "DEFAULT_WORKSPACE_BYTES",
]

Activation = Literal["tanh"] | None

# Dense spectra of one block are materialised for at most this many bytes' worth of
# batch items at a time (SpectralConv2d.workspace_bytes), bounding the transient peak.
# 512 KiB keeps a training step's peak below the spatial twin's for the benchmark models,
# at some speed (more, smaller chunks; docs/specnet.md); GPUs want far more.
DEFAULT_WORKSPACE_BYTES = 512 << 10

# --------------------------------------------------------------------------- compact storage

_BIT_WEIGHTS = (1, 2, 4, 8, 16, 32, 64, 128)


def _bit_weights(device: torch.device) -> torch.Tensor:
    return torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=device)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean mask into bytes, 8 entries per byte (LSB first, row-major).

    Parameters
    ----------
    mask : torch.Tensor
        Boolean tensor of any shape.

    Returns
    -------
    torch.Tensor
        ``uint8`` tensor of ``ceil(mask.numel() / 8)`` bytes.
    """
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) * _bit_weights(flat.device)).sum(-1, dtype=torch.uint8)


def unpack_mask(bits: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`.

    Parameters
    ----------
    bits : torch.Tensor
        Packed ``uint8`` bytes.
    shape : sequence of int
        Shape of the original mask.

    Returns
    -------
    torch.Tensor
        Boolean mask of ``shape``.
    """
    n = math.prod(shape)
    flat = (bits.unsqueeze(-1) & _bit_weights(bits.device)).ne(0).reshape(-1)[:n]
    return flat.view(tuple(shape))


def _half(grid: int) -> int:
    return grid // 2 + 1


@dataclass(frozen=True)
class SpecMap:
    """A batch of spectral feature maps (orthonormal ``rfft2`` on a ``grid x grid`` grid).

    The real map it stands for is supported on ``[0, support)^2``; the rest of the grid
    is halo that the next consumer crops away. ``pool > 1`` is an average pooling that
    has been requested but not applied yet (the consumer applies it).

    Exactly one storage form is set: compact (``values`` + ``bits``, what training
    uses) or real (``re`` + ``im`` dense float tensors of shape ``[B, C, grid, grid//2+1]``,
    used only when a model is lowered for ``torch.export``).

    Parameters
    ----------
    batch, channels, grid, support : int
        Geometry.
    values : torch.Tensor, optional
        Kept complex entries, row-major over ``[B, C, grid, grid // 2 + 1]``. Only unique
        entries are stored: those of :func:`redundant_mask` are conjugates of others and
        are rebuilt on densifying.
    bits : torch.Tensor, optional
        :func:`pack_mask` of the kept-entry mask (never set on redundant entries).
    re, im : torch.Tensor, optional
        Dense real/imaginary parts (lowering mode).
    pool : int
        Pending average-pooling factor.
    """

    batch: int
    channels: int
    grid: int
    support: int
    values: torch.Tensor | None = None
    bits: torch.Tensor | None = None
    re: torch.Tensor | None = None
    im: torch.Tensor | None = None
    pool: int = 1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Dense shape ``(B, C, grid, grid // 2 + 1)`` of the half spectrum."""
        return (self.batch, self.channels, self.grid, _half(self.grid))

    @property
    def is_compact(self) -> bool:
        """Whether the map is in compact (values + bitmask) form."""
        return self.values is not None

    @property
    def out_support(self) -> int:
        """Support after the pending pooling."""
        return self.support // self.pool

    @property
    def nnz(self) -> int:
        """Number of stored complex entries."""
        if self.values is None:
            raise ValueError("nnz is defined for compact maps only")
        return self.values.numel()

    @property
    def density(self) -> float:
        """Kept fraction of the unique half-spectrum entries (:func:`unique_entries`)."""
        return self.nnz / (self.batch * self.channels * unique_entries(self.grid))

    @property
    def nbytes(self) -> int:
        """True storage size of the compact form: values plus bitmask bytes."""
        if self.values is None or self.bits is None:
            raise ValueError("nbytes is defined for compact maps only")
        return self.values.numel() * self.values.element_size() + self.bits.numel()

    def to_dense(self) -> torch.Tensor:
        """Return the dense complex half spectrum ``[B, C, grid, grid // 2 + 1]``.

        Differentiable with respect to ``values``; the pending pool is not applied.

        Returns
        -------
        torch.Tensor
            Complex tensor.
        """
        if self.values is None:
            return torch.complex(self.re, self.im)
        return _DensifyFn.apply(self.values, self.bits, self.shape)

    def to_spatial(self) -> torch.Tensor:
        """Inverse-transform, apply the pending pool and crop to the support.

        Returns
        -------
        torch.Tensor
            Real tensor ``[B, C, support // pool, support // pool]``.
        """
        if self.values is None:
            return _real_to_spatial(self)
        z = _apply_pool(self.to_dense(), self.grid, self.pool)
        grid = self.grid // self.pool if self.grid % self.pool == 0 else self.grid
        x = torch.fft.irfft2(z, s=(grid, grid), norm="ortho")
        if grid == self.grid and self.pool > 1:  # pooled in space (grid not divisible)
            x = F.avg_pool2d(x[..., : self.support, : self.support], self.pool)
        return x[..., : self.out_support, : self.out_support]


@functools.lru_cache(maxsize=256)
def _mirror(grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    # The rfft2 half spectrum [G, G//2+1] of a real map still repeats itself: in column 0
    # and, for even G, the Nyquist column G/2, row r is the conjugate of row (G - r) mod G.
    # Returns the [G, G//2+1] mask of the rows past G/2 in those columns (the redundant
    # entries: G*(G//2+1) - redundant = G^2/2 + O(1) unique entries), and the row
    # permutation r -> (G - r) mod G that maps each to its partner.
    red = torch.zeros(grid, _half(grid), dtype=torch.bool)
    red[grid // 2 + 1 :, 0] = True
    if grid % 2 == 0:
        red[grid // 2 + 1 :, grid // 2] = True
    return red, (-torch.arange(grid)) % grid


def redundant_mask(grid: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Entries of a ``grid x (grid // 2 + 1)`` half spectrum that conjugate symmetry fixes.

    Compact maps store only the other entries (:class:`SpecMap`); densifying restores
    these as conjugates of their partners (:func:`hermitian_fill`).

    Parameters
    ----------
    grid : int
        FFT grid size.
    device : torch.device or str, optional
        Device of the result.

    Returns
    -------
    torch.Tensor
        Boolean ``[grid, grid // 2 + 1]``.
    """
    return _mirror(grid)[0].to(device, copy=True)  # a copy: the cached mask must not change


def unique_entries(grid: int) -> int:
    """Number of half-spectrum entries of one channel that a compact map can store.

    Parameters
    ----------
    grid : int
        FFT grid size.

    Returns
    -------
    int
        ``grid * (grid // 2 + 1)`` minus the redundant entries.
    """
    return grid * _half(grid) - int(_mirror(grid)[0].sum())


def hermitian_fill(z: torch.Tensor, grid: int) -> torch.Tensor:
    """Overwrite the redundant entries of a half spectrum with their conjugate partners.

    Differentiable (out of place). A half spectrum of a real map is unchanged.

    Parameters
    ----------
    z : torch.Tensor
        Complex ``[..., grid, grid // 2 + 1]``.
    grid : int
        FFT grid size.

    Returns
    -------
    torch.Tensor
        ``z`` with entries of :func:`redundant_mask` set to the conjugates of their partners.
    """
    red, perm = _mirror(grid)
    if not bool(red.any()):
        return z
    red, perm = red.to(z.device), perm.to(z.device)
    return torch.where(red, z.index_select(-2, perm).conj(), z)


def _hermitian_fill_adjoint(g: torch.Tensor, grid: int) -> torch.Tensor:
    # Adjoint of hermitian_fill under PyTorch's complex-gradient convention: a redundant
    # entry's gradient moves, conjugated, onto its partner (perm is an involution).
    red, perm = _mirror(grid)
    if not bool(red.any()):
        return g
    red, perm = red.to(g.device), perm.to(g.device)
    moved = torch.where(red, g, torch.zeros((), dtype=g.dtype, device=g.device)).conj()
    return g.masked_fill(red, 0) + moved.index_select(-2, perm)


class _DensifyFn(torch.autograd.Function):
    # Compact -> dense, saving only the bitmask (masked_scatter would save a bool mask).
    @staticmethod
    def forward(ctx, values, bits, shape):
        mask = unpack_mask(bits, shape)
        ctx.save_for_backward(bits)
        ctx.shape = shape
        return hermitian_fill(values.new_zeros(shape).masked_scatter(mask, values), shape[-2])

    @staticmethod
    def backward(ctx, grad):
        (bits,) = ctx.saved_tensors
        grad = _hermitian_fill_adjoint(grad, ctx.shape[-2])
        return grad.masked_select(unpack_mask(bits, ctx.shape)), None, None


# --------------------------------------------------------------------------- spectral ops


@functools.lru_cache(maxsize=256)
def _tap_phases(kernel: int, grid: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    # exp(-2 pi i f r(e) / G) for tap e at circular position r(e) = (padding - e) mod G, as
    # its real and imaginary parts, float64 [G, k]; rows [: G // 2 + 1] serve the half axis.
    r = (padding - torch.arange(kernel, dtype=torch.float64)) % grid
    f = torch.arange(grid, dtype=torch.float64)
    ang = -2 * math.pi * ((f[:, None] * r[None, :]) % grid) / grid
    return torch.cos(ang), torch.sin(ang)


@functools.lru_cache(maxsize=256)
def _phase_matrix(kernel: int, grid: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    # P[f, e] = A[p, e1] B[q, e2] for frequency f = p * H + q and tap e = e1 * k + e2, so
    # that the kernel spectrum in frequency-major layout is P @ W (W: [k*k, C_in*C_out]).
    cos, sin = _tap_phases(kernel, grid, padding)
    a = torch.complex(cos, sin)
    b = a[: _half(grid)]
    p = (a[:, None, :, None] * b[None, :, None, :]).reshape(grid * _half(grid), kernel**2)
    return p.real.contiguous(), p.imag.contiguous()


def kernel_spectrum(weight: torch.Tensor, grid: int, padding: int) -> torch.Tensor:
    """Unnormalised ``rfft2`` of a conv kernel laid out for cross-correlation.

    ``nn.Conv2d`` computes ``y[i] = sum_e x[i + e - p] w[e]``; as a circular convolution
    ``y = x (*) h`` that is ``h[(p - e) mod G] = w[e]``. With orthonormal feature-map
    transforms, ``rfft2(y) = rfft2(x) * kernel_spectrum(w)``. Evaluated as two small real
    matmuls against the ``k`` tap phases per axis (cheaper than FFTs of a mostly-zero grid).

    Parameters
    ----------
    weight : torch.Tensor
        ``[C_out, C_in, k, k]`` real kernel.
    grid : int
        FFT grid size ``G >= k``.
    padding : int
        Conv padding ``p`` in ``[0, k - 1]``.

    Returns
    -------
    torch.Tensor
        Complex ``[C_out, C_in, G, G // 2 + 1]``.
    """
    k = weight.shape[-1]
    if k > grid:
        raise ValueError(f"kernel {k} does not fit the grid {grid}")
    cos, sin = (t.to(weight.dtype).to(weight.device) for t in _tap_phases(k, grid, padding))
    h = _half(grid)
    hc, hs = cos[:h], sin[:h]
    co, ci = weight.shape[:2]
    # Columns (half axis) first, T = w @ E_half^T, then rows, K = E_full @ T; both as
    # plain 2-D matmuls (broadcast matmuls become many tiny GEMMs).
    w2 = weight.reshape(co * ci * k, k)
    t_re = torch.mm(w2, hc.T).reshape(co * ci, k, h).transpose(0, 1).reshape(k, co * ci * h)
    t_im = torch.mm(w2, hs.T).reshape(co * ci, k, h).transpose(0, 1).reshape(k, co * ci * h)
    k_re = (torch.mm(cos, t_re) - torch.mm(sin, t_im)).reshape(grid, co, ci, h)
    k_im = (torch.mm(cos, t_im) + torch.mm(sin, t_re)).reshape(grid, co, ci, h)
    k_re, k_im = k_re.permute(1, 2, 0, 3), k_im.permute(1, 2, 0, 3)
    return torch.complex(k_re, k_im)


def spectral_tanh(z: torch.Tensor) -> torch.Tensor:
    """Apply ``f(a + ib) = tanh(a) + i tanh(b)`` (odd in both parts: keeps symmetry).

    Parameters
    ----------
    z : torch.Tensor
        Complex tensor.

    Returns
    -------
    torch.Tensor
        Complex tensor of the same shape.
    """
    return torch.complex(torch.tanh(z.real), torch.tanh(z.imag))


def spectral_threshold(z: torch.Tensor, beta: float) -> torch.Tensor:
    """Zero the entries with ``|z| <= beta``.

    Parameters
    ----------
    z : torch.Tensor
        Complex tensor.
    beta : float
        Non-negative threshold.

    Returns
    -------
    torch.Tensor
        Thresholded tensor.
    """
    _check_beta(beta)
    return torch.where(z.abs() > beta, z, torch.zeros_like(z))


def spectral_decimate(spec: torch.Tensor, factor: int, grid: int) -> torch.Tensor:
    """Spectrum of ``x[::factor, ::factor]`` from the half spectrum of ``x``.

    Downsampling by ``s`` in space averages the ``s`` spectral replicas per axis; with
    orthonormal transforms ``X_d[p, q] = (1/s) sum_{r, t} X[p + r G/s, q + t G/s]``. The
    columns beyond ``G // 2`` are filled in from conjugate symmetry.

    Parameters
    ----------
    spec : torch.Tensor
        Complex ``[..., G, G // 2 + 1]`` orthonormal half spectrum of a real map.
    factor : int
        Downsampling factor ``s``; must divide ``G``.
    grid : int
        ``G``.

    Returns
    -------
    torch.Tensor
        Complex ``[..., G / s, G / (2 s) + 1]``.
    """
    if factor == 1:
        return spec
    if factor < 1 or grid % factor:
        raise ValueError(f"decimation factor {factor} must divide the grid {grid}")
    n = grid // factor
    a = spec.reshape(*spec.shape[:-2], factor, n, spec.shape[-1]).sum(-3)
    # a is Hermitian on the (n, grid) grid: a[p, q] = conj(a[-p mod n, grid - q]).
    rows = (-torch.arange(n, device=spec.device)) % n
    tail = a[..., rows, 1 : grid - grid // 2].flip(-1).conj()
    full = torch.cat([a, tail], -1)
    b = full.reshape(*full.shape[:-1], factor, n).sum(-2)
    return b[..., : _half(n)] / factor


def _box_spectrum(grid: int, factor: int, like: torch.Tensor) -> torch.Tensor:
    idx = (-torch.arange(factor)) % grid
    h = torch.zeros(grid, grid, dtype=like.real.dtype, device=like.device)
    h[idx[:, None], idx[None, :]] = 1.0 / factor**2
    return torch.fft.rfft2(h)


def spectral_avg_pool2d(spec: torch.Tensor, factor: int, grid: int) -> torch.Tensor:
    """``avg_pool2d(x, factor)`` in frequency: box-filter product, then decimation.

    Exact on the valid region: for ``x`` supported on ``[0, M)^2`` the result, cropped to
    ``[0, M // factor)^2``, equals ``F.avg_pool2d`` of the cropped map.

    Parameters
    ----------
    spec : torch.Tensor
        Complex ``[..., G, G // 2 + 1]`` orthonormal half spectrum.
    factor : int
        Pooling kernel and stride; must divide ``G``.
    grid : int
        ``G``.

    Returns
    -------
    torch.Tensor
        Complex ``[..., G / factor, G / (2 factor) + 1]``.
    """
    if factor == 1:
        return spec
    return spectral_decimate(spec * _box_spectrum(grid, factor, spec), factor, grid)


def spectral_crop(spec: torch.Tensor, grid: int, support: int, target: int) -> torch.Tensor:
    """Project a spectrum onto the maps supported on ``[0, support)^2`` and re-grid it.

    Equivalent to ``rfft2(irfft2(spec)[..., :support, :support], s=(target, target))``;
    that is also how it is evaluated (an ``O(G^2 log G)`` FFT pair rather than the
    equivalent dense spectral operator).

    Parameters
    ----------
    spec : torch.Tensor
        Complex ``[..., grid, grid // 2 + 1]`` orthonormal half spectrum.
    grid : int
        Grid of ``spec``.
    support : int
        Valid extent, ``<= grid``.
    target : int
        Output grid, ``>= support``.

    Returns
    -------
    torch.Tensor
        Complex ``[..., target, target // 2 + 1]``.
    """
    if grid == target and support == grid:
        return spec
    x = torch.fft.irfft2(spec, s=(grid, grid), norm="ortho")[..., :support, :support]
    return torch.fft.rfft2(x, s=(target, target), norm="ortho")


def _apply_pool(spec: torch.Tensor, grid: int, pool: int) -> torch.Tensor:
    # Spectral pooling needs the factor to divide the grid; otherwise the caller pools in
    # space after the crop (same result), see SpecMap.to_spatial and _front.
    if pool > 1 and grid % pool == 0:
        return spectral_avg_pool2d(spec, pool, grid)
    return spec


def conv_grid(size: int, kernel: int, stride: int = 1) -> int:
    """FFT grid of a conv on a ``size``-wide input: ``size + kernel - 1`` up to a stride multiple.

    Parameters
    ----------
    size : int
        Input support.
    kernel : int
        Kernel size.
    stride : int
        Stride (the grid must be divisible by it for spectral decimation).

    Returns
    -------
    int
        Grid size.
    """
    g = size + kernel - 1
    return -(-g // stride) * stride


def _out_size(size: int, kernel: int, padding: int, stride: int) -> int:
    # Output support of a strided conv: ceil((size + 2p - k + 1) / s).
    return -(-(size + 2 * padding - kernel + 1) // stride)


def _check_beta(beta: float) -> None:
    if not isinstance(beta, (int, float)) or math.isnan(beta) or beta < 0:
        raise ValueError(f"beta must be a non-negative number, got {beta!r}")


# --------------------------------------------------------------------------- the block


@dataclass(frozen=True)
class _Piece:
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
class _BlockCfg:
    pieces: tuple[_Piece, ...]
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
    # Filled with {"rms": ...} (pre-threshold RMS of |Y|) when given; see calibrate_.
    stats: dict | None = field(default=None, compare=False)


class _Inputs:
    """The block's inputs, sliceable by batch chunk.

    Compact values are row-major over ``[B, C, G, H]``, so one batch item's entries are
    contiguous; offsets come from the unpacked mask (1 byte per entry, transient).
    """

    def __init__(self, cfg: _BlockCfg, tensors: Sequence[torch.Tensor]):
        self.items: list[tuple] = []
        i = 0
        for piece in cfg.pieces:
            if piece.kind == "spatial":
                self.items.append(("spatial", tensors[i]))
                i += 1
                continue
            values, bits = tensors[i], tensors[i + 1]
            i += 2
            mask = unpack_mask(bits, (cfg.batch, piece.channels, piece.grid, _half(piece.grid)))
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


def _front(cfg: _BlockCfg, parts: Sequence[tuple[torch.Tensor, torch.Tensor | None]]):
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

    def __init__(self, weight: torch.Tensor, cfg: _BlockCfg, dtype: torch.dtype, fchunk: int):
        k, ci, co = cfg.kernel, cfg.cin, cfg.cout
        self.shape = (ci, co)
        self.dtype = dtype
        self.w = weight.detach().permute(2, 3, 1, 0).reshape(k * k, ci * co)
        self.uniform = k == 1 and cfg.padding == 0
        if self.uniform:
            self.wc = self.w.view(ci, co).to(dtype)
            return
        pr, pi = _phase_matrix(k, cfg.grid, cfg.padding)
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


def _project_output(cfg: _BlockCfg, Y: torch.Tensor) -> torch.Tensor:
    # Stride (decimation), then drop the halo of the linear convolution: the stored map is
    # the spectrum of the block's output on its own support grid (linear in Y).
    Y = spectral_decimate(Y, cfg.stride, cfg.grid)
    return spectral_crop(Y, cfg.grid // cfg.stride, cfg.out_support, cfg.out_grid)


def _conv_core(cfg: _BlockCfg, Xf: torch.Tensor, ks: _KernelSlices, bias: torch.Tensor | None):
    Y = _project_output(cfg, _from_freq_major(ks.forward(Xf), cfg.grid))
    if bias is not None:
        # A constant b on the G' x G' grid has orthonormal DC coefficient b * G'.
        # In place is safe: Y is a fresh tensor and this runs without autograd.
        Y[..., 0, 0] += (bias * cfg.out_grid).to(Y.dtype)
    return Y


def _chunks(cfg: _BlockCfg):
    return [(b, min(b + cfg.chunk, cfg.batch)) for b in range(0, cfg.batch, cfg.chunk)]


def _fchunk(cfg: _BlockCfg) -> int:
    # Frequencies per kernel-spectrum slice [f, C_in, C_out], within the same workspace.
    nf = cfg.grid * _half(cfg.grid)
    return max(1, min(nf, cfg.workspace // (cfg.cin * cfg.cout * cfg.itemsize)))


class _SpectralBlockFn(torch.autograd.Function):
    """conv -> threshold -> (tanh), saving only compact maps (see module docstring).

    Dense spectra exist only for ``cfg.chunk`` batch items at a time, and the kernel
    spectrum only in frequency slices, in forward and backward: the transient workspace
    is bounded (``SpectralConv2d.workspace_bytes``).
    """

    @staticmethod
    def forward(ctx, cfg: _BlockCfg, weight, bias, *inputs):
        with torch.no_grad():
            src = _Inputs(cfg, inputs)
            ks = None
            masks, vals = [], []
            sq = 0.0
            # Only unique entries are stored; consumers rebuild the rest (hermitian_fill).
            unique = ~redundant_mask(cfg.out_grid, weight.device)
            for b0, b1 in _chunks(cfg):
                parts, _ = src.chunk(b0, b1)
                Xf = _freq_major(_front(cfg, parts))
                if ks is None:
                    ks = _KernelSlices(weight, cfg, Xf.dtype, _fchunk(cfg))
                Y = _conv_core(cfg, Xf, ks, bias)
                del Xf
                mag = Y.abs()
                if cfg.stats is not None:
                    sq += float(mag.square().sum())
                mask = (mag > cfg.beta) & unique
                del mag
                v = Y[mask]
                vals.append(spectral_tanh(v) if cfg.activation == "tanh" else v)
                masks.append(mask)
                del Y
            values = vals[0] if len(vals) == 1 else torch.cat(vals)
            bits = pack_mask(masks[0] if len(masks) == 1 else torch.cat(masks))
            del vals, masks, ks
            if cfg.stats is not None:
                n = cfg.batch * cfg.cout * cfg.out_grid * _half(cfg.out_grid)
                cfg.stats["rms"] = (sq / n) ** 0.5
        ctx.cfg = cfg
        ctx.mark_non_differentiable(bits)
        ctx.save_for_backward(weight, bias, values, bits, *inputs)
        return values, bits

    @staticmethod
    def backward(ctx, g_values, _g_bits):
        cfg: _BlockCfg = ctx.cfg
        weight, bias, values, bits, *inputs = ctx.saved_tensors
        out_shape = (cfg.batch, cfg.cout, cfg.out_grid, _half(cfg.out_grid))
        if cfg.activation == "tanh":
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
            if g_bias is not None:
                g_bias += (GY[..., 0, 0].real.sum(0) * cfg.out_grid).to(bias.dtype)
            if cfg.stride > 1 or cfg.grid != cfg.out_grid:  # adjoint of the linear projection
                # Autograd of the projection at a zero input; its graph is built once per
                # chunk length and replayed (retain_graph) for the other chunks.
                n = b1 - b0
                if n not in adjoints:
                    pre = (n, cfg.cout, cfg.grid, _half(cfg.grid))
                    dummy = torch.zeros(pre, dtype=GY.dtype, device=GY.device, requires_grad=True)
                    with torch.enable_grad():
                        adjoints[n] = (dummy, _project_output(cfg, dummy))
                dummy, proj = adjoints[n]
                (GY,) = torch.autograd.grad(proj, dummy, GY, retain_graph=True)
            GYf = _freq_major(GY)
            del GY
            with torch.enable_grad():
                parts, leaves = src.chunk(b0, b1, piece_need)
                Xf = _freq_major(_front(cfg, parts))
            if ks is None:
                ks = _KernelSlices(weight, cfg, Xf.dtype, _fchunk(cfg))
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
    activation: Activation = "tanh",
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
    activation : {"tanh", None}
        Spectral activation after the threshold.
    in_grid, in_support : int, optional
        Geometry of a spectral ``x``.

    Returns
    -------
    torch.Tensor
        Dense complex output spectrum ``[B, C_out, G', G' // 2 + 1]``.
    """
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
    Y = spectral_decimate(Y, stride, grid)
    out = _out_size(support, k, padding, stride)
    Y = spectral_crop(Y, grid // stride, out, out)
    if bias is not None:
        dc = torch.zeros_like(Y)
        dc[..., 0, 0] = 1
        Y = Y + dc * (bias * out).to(Y.dtype)[:, None, None]
    Y = spectral_threshold(Y, beta)
    return spectral_tanh(Y) if activation == "tanh" else Y


Input = torch.Tensor | SpecMap | Sequence["torch.Tensor | SpecMap"]


def _as_list(x: Input) -> list[torch.Tensor | SpecMap]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _itemsize(inputs: Sequence[Any]) -> int:
    ref = next(t.values if isinstance(t, SpecMap) else t for t in inputs)
    return 16 if ref.dtype in (torch.float64, torch.complex128) else 8


class SpectralConv2d(nn.Module):
    """SpecNet conv block: FFT conv, threshold ``|Y| <= beta -> 0``, optional spectral tanh.

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
    activation : {"tanh", None}
        Fused spectral activation.
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
        activation: Activation = "tanh",
        bias: bool = True,
    ):
        super().__init__()
        if kernel_size < 1 or in_channels < 1 or out_channels < 1 or stride < 1:
            raise ValueError("kernel_size, channels and stride must be >= 1")
        padding = (kernel_size - 1) // 2 if padding is None else padding
        if not 0 <= padding <= kernel_size - 1:
            raise ValueError(f"padding must be in [0, {kernel_size - 1}], got {padding}")
        if activation not in ("tanh", None):
            raise ValueError(f"activation must be 'tanh' or None, got {activation!r}")
        _check_beta(beta)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding, self.stride = kernel_size, padding, stride
        self.beta = float(beta)
        self.activation = activation
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

    def _pieces(self, inputs: list[torch.Tensor | SpecMap]) -> tuple[list[_Piece], int, int]:
        pieces, batch = [], None
        for x in inputs:
            if isinstance(x, SpecMap):
                p = _Piece("compact", x.channels, x.grid, x.support, x.pool)
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
                p = _Piece("spatial", x.shape[1], x.shape[-1], x.shape[-1], 1)
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
        per_item = max(self.in_channels, self.out_channels) * grid * _half(grid) * item
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
        out = _out_size(size, self.kernel_size, self.padding, self.stride)
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
        _check_beta(self.beta)
        inputs = _as_list(x)
        pieces, batch, size = self._pieces(inputs)
        grid, out_grid, out_support = self.geometry(size, [p.eff_grid for p in pieces])
        if self.lowering:
            return _real_block(self, inputs, pieces, batch, grid, out_grid, out_support)
        cfg = _BlockCfg(
            tuple(pieces), batch, self.in_channels, self.out_channels, self.kernel_size,
            self.padding, self.stride, grid, out_grid, out_support, self.beta, self.activation,
            self.pointwise, self._chunk(batch, grid, inputs), self.workspace_bytes,
            _itemsize(inputs), self.stats if self.record_stats else None,
        )  # fmt: skip
        tensors: list[torch.Tensor] = []
        for t in inputs:
            tensors += [t.values, t.bits] if isinstance(t, SpecMap) else [t]
        values, bits = _SpectralBlockFn.apply(cfg, self.weight, self.bias, *tensors)
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
            return x.to_spatial() if x.is_compact else _real_to_spatial(x, self)
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

    ``spectral=True``: :class:`SpectralConv2d` with the fused spectral tanh.
    ``spectral=False``: ``nn.Conv2d`` followed by ReLU or tanh. Both have ``conv.weight``
    and ``conv.bias``.

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
    ):
        super().__init__()
        padding = (kernel_size - 1) // 2 if padding is None else padding
        self.spectral = spectral
        if spectral:
            self.conv: nn.Module = SpectralConv2d(
                in_channels, out_channels, kernel_size, padding, stride, beta, "tanh"
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


# --------------------------------------------------------------------------- lowering (export)


def set_lowering(model: nn.Module, on: bool = True) -> nn.Module:
    """Switch spectral blocks to their ``torch.export``-friendly real-arithmetic path.

    In lowering mode spectra travel as dense real/imaginary float tensors and every
    transform is a matmul against constant DFT matrices (:mod:`tvm_freq.kernels.dft`),
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


def _const(module: nn.Module, name: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    key = "_lower_" + name
    buf = module._buffers.get(key)
    if buf is None:
        buf = make()
        module.register_buffer(key, buf, persistent=False)
    return buf


def _mat(module: nn.Module, name: str, make: Callable[[], Any]) -> torch.Tensor:
    return _const(module, name, lambda: torch.as_tensor(make(), dtype=torch.float32))


def _real_rdft2(module, x, grid, tag):
    from .kernels import dft

    m = x.shape[-1]
    c = _mat(module, f"{tag}_rc", lambda: dft.rdft_matrices(m, grid)[0])
    s = _mat(module, f"{tag}_rs", lambda: dft.rdft_matrices(m, grid)[1])
    cf = _mat(module, f"{tag}_fc", lambda: dft.dft_matrices(m, grid)[0])
    sf = _mat(module, f"{tag}_fs", lambda: dft.dft_matrices(m, grid)[1])
    a_re = torch.matmul(x, c)
    a_im = -torch.matmul(x, s)
    return (
        torch.matmul(cf, a_re) + torch.matmul(sf, a_im),
        torch.matmul(cf, a_im) - torch.matmul(sf, a_re),
    )


def _real_irdft2(module, re, im, grid, positions, tag):
    from .kernels import dft

    ci = _mat(module, f"{tag}_ic", lambda: dft.idft_matrices(grid, positions)[0])
    si = _mat(module, f"{tag}_is", lambda: dft.idft_matrices(grid, positions)[1])
    wc = _mat(module, f"{tag}_iwc", lambda: dft.irdft_matrices(grid, positions)[0])
    ws = _mat(module, f"{tag}_iws", lambda: dft.irdft_matrices(grid, positions)[1])
    b_re = torch.matmul(ci, re) - torch.matmul(si, im)
    b_im = torch.matmul(ci, im) + torch.matmul(si, re)
    return torch.matmul(b_re, wc) - torch.matmul(b_im, ws)


def _real_to_spatial(m: SpecMap, owner: nn.Module | None = None) -> torch.Tensor:
    # Without an owner the matrices are rebuilt per call (eager use only).
    owner = owner if owner is not None else nn.Module()
    tag = f"tospatial_g{m.grid}_s{m.support}"
    x = _real_irdft2(owner, m.re, m.im, m.grid, tuple(range(m.support)), tag)
    return F.avg_pool2d(x, m.pool) if m.pool > 1 else x


def _real_block(mod: SpectralConv2d, inputs, pieces, batch, grid, out_grid, out_support):
    xs_re, xs_im = [], []
    for j, (x, p) in enumerate(zip(inputs, pieces, strict=True)):
        tag = f"in{j}_g{p.grid}_s{p.support}_p{p.pool}_t{grid}"
        if p.kind == "spatial":
            re, im = _real_rdft2(mod, x, grid, tag)
        elif p.pool == 1 and p.grid == grid and (p.support == grid or mod.pointwise):
            re, im = x.re, x.im
        elif mod.pointwise and p.grid % p.pool == 0 and p.eff_grid == grid:
            # Spectral pooling keeps the halo: pool the whole periodic map (no wrap, since
            # the pool divides the grid), which is exactly spectral_avg_pool2d.
            xs = _real_irdft2(mod, x.re, x.im, p.grid, tuple(range(p.grid)), tag)
            re, im = _real_rdft2(mod, F.avg_pool2d(xs, p.pool), grid, tag)
        else:
            # Crop (and pool) in space, then back: the same linear map as spectral_crop.
            xs = _real_irdft2(mod, x.re, x.im, p.grid, tuple(range(p.support)), tag)
            if p.pool > 1:
                xs = F.avg_pool2d(xs, p.pool)
            re, im = _real_rdft2(mod, xs, grid, tag)
        xs_re.append(re)
        xs_im.append(im)
    re = xs_re[0] if len(xs_re) == 1 else torch.cat(xs_re, 1)
    im = xs_im[0] if len(xs_im) == 1 else torch.cat(xs_im, 1)
    nf = grid * _half(grid)
    cin, cout = mod.in_channels, mod.out_channels

    def kspec():
        with torch.no_grad():
            k = kernel_spectrum(mod.weight.detach().double(), grid, mod.padding)
        return k.reshape(cout, cin, nf).permute(2, 1, 0).contiguous()  # [F, Cin, Cout]

    kr = _const(mod, f"k_re_g{grid}", lambda: kspec().real.float())
    ki = _const(mod, f"k_im_g{grid}", lambda: kspec().imag.float())
    # Per-frequency GEMM over channels: [F, B, Cin] @ [F, Cin, Cout].
    xr = re.reshape(batch, cin, nf).permute(2, 0, 1)
    xi = im.reshape(batch, cin, nf).permute(2, 0, 1)
    yr = torch.matmul(xr, kr) - torch.matmul(xi, ki)
    yi = torch.matmul(xr, ki) + torch.matmul(xi, kr)
    yr = yr.permute(1, 2, 0).reshape(batch, cout, grid, _half(grid))
    yi = yi.permute(1, 2, 0).reshape(batch, cout, grid, _half(grid))
    if mod.stride > 1 or grid != out_grid:
        # Stride and halo crop (_project_output): inverse at the kept rows/cols, forward again.
        pos = tuple(range(0, grid, mod.stride))[:out_support]
        ys = _real_irdft2(mod, yr, yi, grid, pos, f"out_g{grid}")
        yr, yi = _real_rdft2(mod, ys, out_grid, f"out_g{grid}")
    if mod.bias is not None:

        def dc(part):
            b = torch.zeros(cout, out_grid, _half(out_grid))
            if part == "re":
                b[:, 0, 0] = mod.bias.detach().float() * out_grid
            return b

        yr = yr + _const(mod, f"bias_re_g{out_grid}", lambda: dc("re"))
    keep = torch.sqrt(yr * yr + yi * yi) > mod.beta
    zero = torch.zeros_like(yr)
    if mod.activation == "tanh":
        yr, yi = torch.tanh(yr), torch.tanh(yi)
    yr = torch.where(keep, yr, zero)
    yi = torch.where(keep, yi, zero)
    return SpecMap(batch, cout, out_grid, out_support, re=yr, im=yi)


# --------------------------------------------------------------------------- models


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _check_common(in_channels: int, num_classes: int, width: float, beta: float) -> None:
    if in_channels < 1 or num_classes < 1:
        raise ValueError("in_channels and num_classes must be >= 1")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    _check_beta(beta)


class _SpecBase(nn.Module):
    input_size = 32

    def _check_input(self, x: torch.Tensor) -> None:
        want = (self.in_channels, self.input_size, self.input_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != want:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            shape = ", ".join(map(str, want))
            raise ValueError(f"expected an input of shape [B, {shape}], got {got}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``[B, C, 32, 32]`` images.

        Parameters
        ----------
        x : torch.Tensor
            Input batch.

        Returns
        -------
        torch.Tensor
            Logits ``[B, num_classes]``.
        """
        # features -> spatial head -> classifier; DenseNet overrides this.
        self._check_input(x)
        return self.classifier(torch.flatten(self.head(self.features(x)), 1))


class SpecLeNet(_SpecBase):
    """LeNet-5 for 32x32 inputs: two 5x5 valid convs with 2x2 average pooling, 3 FC layers.

    Parameters
    ----------
    in_channels, num_classes : int
        Input channels and classes.
    spectral : bool
        Spectral blocks (SpecNet) or the spatial twin.
    beta : float
        Threshold of the spectral blocks.
    width : float
        Channel multiplier (convs and hidden FC layers).
    spatial_act : {"relu", "tanh"}
        Activation of the spatial twin's convs.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        spectral: bool = True,
        beta: float = 1.0,
        width: float = 1.0,
        spatial_act: str = "relu",
    ):
        super().__init__()
        _check_common(in_channels, num_classes, width, beta)
        self.in_channels = in_channels
        c1, c2 = _ch(6, width), _ch(16, width)
        kw = dict(spectral=spectral, beta=beta, spatial_act=spatial_act)
        self.features = nn.Sequential(
            ConvAct(in_channels, c1, 5, 0, **kw), AvgPool(2),
            ConvAct(c1, c2, 5, 0, **kw), AvgPool(2),
        )  # fmt: skip
        self.head = ToSpatial()
        h1, h2 = _ch(120, width), _ch(84, width)
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 25, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
            nn.Linear(h2, num_classes),
        )  # fmt: skip


class SpecAlexNet(_SpecBase):
    """AlexNet for 32x32 inputs (5x5, 5x5, 3x3 x 3 convs; three 2x2 average pools).

    Parameters
    ----------
    in_channels, num_classes : int
        Input channels and classes.
    spectral : bool
        Spectral blocks (SpecNet) or the spatial twin.
    beta : float
        Threshold of the spectral blocks.
    width : float
        Channel multiplier (convs and hidden FC layers).
    spatial_act : {"relu", "tanh"}
        Activation of the spatial twin's convs.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        spectral: bool = True,
        beta: float = 1.0,
        width: float = 1.0,
        spatial_act: str = "relu",
    ):
        super().__init__()
        _check_common(in_channels, num_classes, width, beta)
        self.in_channels = in_channels
        c = [_ch(v, width) for v in (64, 192, 384, 256, 256)]
        kw = dict(spectral=spectral, beta=beta, spatial_act=spatial_act)
        self.features = nn.Sequential(
            ConvAct(in_channels, c[0], 5, **kw), AvgPool(2),
            ConvAct(c[0], c[1], 5, **kw), AvgPool(2),
            ConvAct(c[1], c[2], 3, **kw),
            ConvAct(c[2], c[3], 3, **kw),
            ConvAct(c[3], c[4], 3, **kw), AvgPool(2),
        )  # fmt: skip
        self.head = ToSpatial()
        h = _ch(1024, width)
        self.classifier = nn.Sequential(
            nn.Linear(c[4] * 16, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
            nn.Linear(h, num_classes),
        )  # fmt: skip


class SpecVGG16(_SpecBase):
    """VGG-16 for 32x32 inputs without batch norm (13 3x3 convs, 5 average pools, 1 FC).

    Parameters
    ----------
    in_channels, num_classes : int
        Input channels and classes.
    spectral : bool
        Spectral blocks (SpecNet) or the spatial twin.
    beta : float
        Threshold of the spectral blocks.
    width : float
        Channel multiplier.
    spatial_act : {"relu", "tanh"}
        Activation of the spatial twin's convs.
    """

    CFG = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P")

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        spectral: bool = True,
        beta: float = 1.0,
        width: float = 1.0,
        spatial_act: str = "relu",
    ):
        super().__init__()
        _check_common(in_channels, num_classes, width, beta)
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        c = in_channels
        for v in self.CFG:
            if v == "P":
                layers.append(AvgPool(2))
            else:
                co = _ch(int(v), width)
                layers.append(
                    ConvAct(c, co, 3, spectral=spectral, beta=beta, spatial_act=spatial_act)
                )
                c = co
        self.features = nn.Sequential(*layers)
        self.head = ToSpatial()
        self.classifier = nn.Linear(c, num_classes)


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bottleneck: int, kw: dict):
        super().__init__()
        self.bottleneck = ConvAct(cin, bottleneck, 1, **kw)
        self.conv = ConvAct(bottleneck, growth, 3, **kw)

    def forward(self, feats: list) -> Any:
        return self.conv(self.bottleneck(feats))


class SpecDenseNet(_SpecBase):
    """DenseNet-BC for 32x32 inputs without batch norm (1x1 bottleneck + 3x3 per layer).

    Dense blocks pass the list of feature maps instead of a concatenated tensor, and both
    twins' 1x1 convs save the pieces rather than the concatenation (memory-efficient
    DenseNet), so the comparison isolates the feature-map representation.

    Parameters
    ----------
    in_channels, num_classes : int
        Input channels and classes.
    spectral : bool
        Spectral blocks (SpecNet) or the spatial twin.
    beta : float
        Threshold of the spectral blocks.
    width : float
        Multiplier of the growth rate (and so of every channel count).
    spatial_act : {"relu", "tanh"}
        Activation of the spatial twin's convs.
    depth : int
        Network depth, ``6 n + 4`` (three dense blocks of ``n`` bottleneck layers).
    growth : int
        Growth rate ``k`` before ``width``.
    compression : float
        Transition compression.
    head_size : int
        The final 8x8 map is average-pooled to ``head_size x head_size`` and flattened
        into the classifier: 1 is DenseNet's global average pool; 1, 2, 4 or 8.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        spectral: bool = True,
        beta: float = 1.0,
        width: float = 1.0,
        spatial_act: str = "relu",
        depth: int = 40,
        growth: int = 12,
        compression: float = 0.5,
        head_size: int = 1,
    ):
        super().__init__()
        _check_common(in_channels, num_classes, width, beta)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
        if not 0 < compression <= 1:
            raise ValueError("compression must be in (0, 1]")
        if head_size not in (1, 2, 4, 8):
            raise ValueError(f"head_size must be 1, 2, 4 or 8, got {head_size}")
        self.head_size = head_size
        self.in_channels = in_channels
        n = (depth - 4) // 6
        k = _ch(growth, width)
        kw = dict(spectral=spectral, beta=beta, spatial_act=spatial_act)
        c = 2 * k
        self.stem = ConvAct(in_channels, c, 3, **kw)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for b in range(3):
            layers = nn.ModuleList()
            for _ in range(n):
                layers.append(_DenseLayer(c, k, 4 * k, kw))
                c += k
            self.blocks.append(layers)
            if b < 2:
                co = max(1, int(c * compression))
                self.transitions.append(ConvAct(c, co, 1, **kw))
                c = co
        self.pool = AvgPool(2)
        self.head = ToSpatial()
        self.classifier = nn.Linear(c * head_size**2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``[B, C, 32, 32]`` images.

        Parameters
        ----------
        x : torch.Tensor
            Input batch.

        Returns
        -------
        torch.Tensor
            Logits ``[B, num_classes]``.
        """
        self._check_input(x)
        feats = [self.stem(x)]
        for b, layers in enumerate(self.blocks):
            for layer in layers:
                feats.append(layer(feats))
            if b < len(self.transitions):
                feats = [self.pool(self.transitions[b](feats))]
        out = self.head(feats)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, self.head_size), 1))


def _init_weights(model: nn.Module) -> None:
    # He init (fan_in, ReLU gain) for both twins: the standard choice for a plain ReLU
    # net without batch norm, and it keeps spectral magnitudes ~1 so that thresholds in
    # [0.5, 1.5] drop a fraction of the entries instead of all of them (PyTorch's default
    # conv init shrinks the signal ~3x per layer and a spectral net then drops everything).
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, SpectralConv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


_MODELS: dict[str, type[_SpecBase]] = {
    "lenet": SpecLeNet,
    "alexnet": SpecAlexNet,
    "vgg16": SpecVGG16,
    "densenet": SpecDenseNet,
}
SPECNET_NAMES: tuple[str, ...] = tuple(_MODELS)


def get_specnet(
    name: str,
    spectral: bool = True,
    beta: float = 1.0,
    width: float = 1.0,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    seed: int | None = 0,
    **kwargs: Any,
) -> nn.Module:
    """Build a Spec-network or, with ``spectral=False``, its spatial twin.

    The same ``seed`` gives both twins the same initial weights (their parameters have
    the same names and shapes).

    Parameters
    ----------
    name : str
        One of :data:`SPECNET_NAMES` (a ``spec-`` prefix and dashes are accepted,
        e.g. ``"Spec-VGG-16"``).
    spectral : bool
        SpecNet blocks or ordinary ``Conv2d`` + ReLU.
    beta : float
        Threshold (ignored by the spatial twin).
    width : float
        Channel multiplier.
    in_channels, num_classes : int
        Input channels and classes.
    seed : int or None
        Seed for the initialisation; ``None`` uses the global RNG.
    **kwargs
        Passed to the model (``spatial_act``, DenseNet's ``depth``/``growth``/...).

    Returns
    -------
    torch.nn.Module
        The model in training mode.
    """
    key = name.lower().replace("-", "").replace("_", "")
    key = key[4:] if key.startswith("spec") else key
    if key not in _MODELS:
        raise ValueError(f"unknown SpecNet {name!r}; choose from {', '.join(SPECNET_NAMES)}")
    ctor = _MODELS[key]
    args = dict(
        in_channels=in_channels, num_classes=num_classes, spectral=spectral, beta=beta,
        width=width, **kwargs,
    )  # fmt: skip
    if seed is None:
        model = ctor(**args)
        _init_weights(model)
        return model
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ctor(**args)
        _init_weights(model)
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


class _StopForwardError(Exception):
    pass


def _conv_blocks_in_order(model: nn.Module, x: torch.Tensor) -> list[ConvAct]:
    order: list[ConvAct] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, _: order.append(mod))
        for m in model.modules()
        if isinstance(m, ConvAct)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(order))


@torch.no_grad()
def calibrate_(
    model: nn.Module, x: torch.Tensor, target_rms: float = 1.0, iters: int = 1
) -> list[float]:
    """Data-dependent init (LSUV, Mishkin & Matas 2016) for nets without batch norm.

    Visits the conv blocks in forward order and rescales each kernel so that the block's
    pre-activation output has RMS ``target_rms`` on ``x``: over pixels for a spatial conv,
    over spectral entries ``|Y|`` (before the threshold) for a spectral one; with
    orthonormal transforms the two agree up to the zero-padded share of the grid.
    Without it, spectral magnitudes shrink with depth until the threshold drops every
    entry, and a block with nothing kept passes no gradient. Both twins get the same
    procedure.

    Parameters
    ----------
    model : nn.Module
        Spec-network or spatial twin (changed in place).
    x : torch.Tensor
        A representative input batch.
    target_rms : float
        Target pre-activation RMS.
    iters : int
        Rescaling passes per block (one is exact while biases are zero: a block's output
        is linear in its own kernel and its input does not depend on it).

    Returns
    -------
    list of float
        RMS measured before the last rescaling, per block in forward order.
    """
    if target_rms <= 0:
        raise ValueError("target_rms must be positive")
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        for block in _conv_blocks_in_order(model, x):
            rms = 0.0
            for _ in range(iters):
                block.record_stats = True

                def stop(_mod, _inp, _out):
                    raise _StopForwardError

                h = block.register_forward_hook(stop)
                try:
                    model(x)
                except _StopForwardError:
                    pass
                finally:
                    h.remove()
                    block.record_stats = False
                rms = block.stats["rms"]
                if rms > 0:
                    block.conv.weight.mul_(target_rms / rms)
            out.append(rms)
    finally:
        model.train(was_training)
    return out


def set_beta(model: nn.Module, beta: float) -> nn.Module:
    """Set the threshold of every spectral block.

    Parameters
    ----------
    model : nn.Module
        Model (changed in place).
    beta : float
        New threshold, ``>= 0``.

    Returns
    -------
    nn.Module
        ``model``.
    """
    _check_beta(beta)
    for _, m in spectral_layers(model):
        m.beta = float(beta)
    return model


def set_workspace(model: nn.Module, nbytes: int) -> nn.Module:
    """Set the working memory of every spectral block (``workspace_bytes``).

    It bounds the dense spectra a block holds at once in training, so it trades peak
    memory for speed; the saved-for-backward bytes do not depend on it.

    Parameters
    ----------
    model : nn.Module
        Model (changed in place).
    nbytes : int
        Bytes, ``>= 1`` (default of new blocks: :data:`DEFAULT_WORKSPACE_BYTES`).

    Returns
    -------
    nn.Module
        ``model``.
    """
    if int(nbytes) < 1:
        raise ValueError(f"workspace must be at least 1 byte, got {nbytes}")
    for _, m in spectral_layers(model):
        m.workspace_bytes = int(nbytes)
    return model
