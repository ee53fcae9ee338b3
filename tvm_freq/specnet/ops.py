"""Functional spectral ops on dense half spectra (no compact storage, no autograd Function).

Kernel spectra (:func:`kernel_spectrum`), the spectral activation and threshold,
decimation (stride), average pooling in frequency, the crop/re-grid projection and
the grid arithmetic of a spectral conv (:func:`conv_grid`, :func:`conv_out_size`).
Every map is the orthonormal ``rfft2`` half spectrum ``[..., G, G // 2 + 1]`` of a
real map; see :mod:`tvm_freq.specnet` for the representation.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "PAPER_ACTIVATION",
    "check_activation",
    "half",
    "kernel_spectrum",
    "phase_matrix",
    "spectral_tanh",
    "spectral_threshold",
    "spectral_decimate",
    "spectral_avg_pool2d",
    "spectral_crop",
    "apply_pool",
    "conv_grid",
    "conv_out_size",
    "check_beta",
]


Activation = Literal["spectral_tanh", "spatial_relu"] | None

# The activations a spectral block can fuse. "spectral_tanh" is the paper's (Eq. 3-4);
# "spatial_relu" is beyond the paper (a ReLU in space inside the halo-crop round trip);
# None is the identity.
ACTIVATIONS: tuple[str, ...] = ("spectral_tanh", "spatial_relu")
PAPER_ACTIVATION = "spectral_tanh"
_ACTIVATION_ALIASES = {"tanh": "spectral_tanh"}  # the name before the variant existed


def check_activation(name: str | None) -> Activation:
    """Return the canonical name of a spectral block activation.

    Parameters
    ----------
    name : str or None
        ``"spectral_tanh"`` (the paper's, alias ``"tanh"``), ``"spatial_relu"`` (beyond
        the paper) or ``None`` (identity).

    Returns
    -------
    str or None
        Canonical name.
    """
    if name is None:
        return None
    canon = _ACTIVATION_ALIASES.get(name, name)
    if canon not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS} or None, got {name!r}")
    return canon  # type: ignore[return-value]


def half(grid: int) -> int:
    """Return the width ``grid // 2 + 1`` of the ``rfft2`` half spectrum of a ``grid`` grid.

    Parameters
    ----------
    grid : int
        FFT grid size.

    Returns
    -------
    int
        Number of columns of the half spectrum.
    """
    return grid // 2 + 1


@functools.lru_cache(maxsize=256)
def _tap_phases(kernel: int, grid: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    # exp(-2 pi i f r(e) / G) for tap e at circular position r(e) = (padding - e) mod G, as
    # its real and imaginary parts, float64 [G, k]; rows [: G // 2 + 1] serve the half axis.
    r = (padding - torch.arange(kernel, dtype=torch.float64)) % grid
    f = torch.arange(grid, dtype=torch.float64)
    ang = -2 * math.pi * ((f[:, None] * r[None, :]) % grid) / grid
    return torch.cos(ang), torch.sin(ang)


@functools.lru_cache(maxsize=256)
def phase_matrix(kernel: int, grid: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the tap-to-frequency matrix ``P`` (cached, float64).

    Parameters
    ----------
    kernel, grid, padding : int
        Kernel size, FFT grid and conv padding.

    Returns
    -------
    tuple of torch.Tensor
        ``[grid * (grid // 2 + 1), kernel**2]`` each.
    """
    # P[f, e] = A[p, e1] B[q, e2] for frequency f = p * H + q and tap e = e1 * k + e2, so
    # that the kernel spectrum in frequency-major layout is P @ W (W: [k*k, C_in*C_out]).
    cos, sin = _tap_phases(kernel, grid, padding)
    a = torch.complex(cos, sin)
    b = a[: half(grid)]
    p = (a[:, None, :, None] * b[None, :, None, :]).reshape(grid * half(grid), kernel**2)
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
    h = half(grid)
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
    check_beta(beta)
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
    return b[..., : half(n)] / factor


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


def apply_pool(spec: torch.Tensor, grid: int, pool: int) -> torch.Tensor:
    """Apply a pending average pool in frequency when ``pool`` divides ``grid``.

    Parameters
    ----------
    spec : torch.Tensor
        Complex half spectrum on ``grid``.
    grid, pool : int
        Grid and pooling factor.

    Returns
    -------
    torch.Tensor
        The pooled spectrum, or ``spec`` unchanged when the pool must be done in space.
    """
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


def conv_out_size(size: int, kernel: int, padding: int, stride: int) -> int:
    """Output support of a strided conv: ``ceil((size + 2p - k + 1) / s)``.

    Parameters
    ----------
    size, kernel, padding, stride : int
        Input support and conv shape.

    Returns
    -------
    int
        Output size.
    """
    return -(-(size + 2 * padding - kernel + 1) // stride)


def check_beta(beta: float) -> None:
    """Check a threshold: a non-negative number (not NaN).

    Parameters
    ----------
    beta : float
        Threshold.
    """
    if not isinstance(beta, (int, float)) or math.isnan(beta) or beta < 0:
        raise ValueError(f"beta must be a non-negative number, got {beta!r}")
