"""SpecNet kernels for TVM: real DFTs as dense matmuls, spectral GEMM, threshold, tanh.

Relax has no FFT op, so the 2-D orthonormal real DFT of the small feature maps used here
(grids up to ~36) is written as two real matmul stages against cos/sin matrices:

* forward (``rfft2`` of an ``M x M`` map zero-padded to ``G x G``)::

      A_re = x @ C,   A_im = -x @ S                     C, S: [M, G//2+1]
      X_re = Cf @ A_re + Sf @ A_im                      Cf, Sf: [G, M]
      X_im = Cf @ A_im - Sf @ A_re

* inverse (``irfft2`` evaluated only at the kept output ``positions``)::

      B_re = Ci @ X_re - Si @ X_im,  B_im = Ci @ X_im + Si @ X_re      Ci, Si: [P, G]
      x = B_re @ Wc - B_im @ Ws                                      Wc, Ws: [G//2+1, P]

  where ``Wc``/``Ws`` weight column ``q`` by 2 except DC and Nyquist (conjugate symmetry),
  exactly what a complex-to-real FFT does.

Zero padding and cropping cost nothing: they select rows of the matrices. Each axis
carries ``1 / sqrt(G)`` (``norm="ortho"``, as :mod:`tvm_freq.specnet` uses).

Every ``*_primfunc`` generator takes plain ints and returns an unscheduled TVMScript
``PrimFunc`` (a ``main`` with ``tirx.noalias``), in the style of
``tvm/relax/backend/gpu_generic/cumsum.py``; the DFT matrices are inputs so the caller
binds them as constants. Beside each one is a NumPy reference (``*_ref``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm.script import tirx as T
from tvm.tirx import PrimFunc

from tvm_freq.dft_matrices import (
    check_pos,
    dft_matrices,
    idft_matrices,
    irdft_matrices,
    rdft_matrices,
)

__all__ = [
    "rdft_matrices",
    "dft_matrices",
    "idft_matrices",
    "irdft_matrices",
    "rdft2_ref",
    "irdft2_ref",
    "spectral_cgemm_ref",
    "spectral_threshold_ref",
    "spectral_tanh_ref",
    "rdft2_primfunc",
    "irdft2_primfunc",
    "spectral_cgemm_primfunc",
    "spectral_threshold_primfunc",
    "spectral_tanh_primfunc",
]


# --------------------------------------------------------------------------- NumPy references


def rdft2_ref(x: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal ``rfft2`` of ``x[..., M, M]`` zero-padded to ``G x G``, by matmuls.

    Parameters
    ----------
    x : numpy.ndarray
        Real ``[..., M, M]``.
    grid : int
        ``G``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Real and imaginary parts, ``[..., G, G // 2 + 1]``; equal to
        ``numpy.fft.rfft2(x, s=(G, G), norm="ortho")``.
    """
    m = x.shape[-1]
    c, s = rdft_matrices(m, grid)
    cf, sf = dft_matrices(m, grid)
    a_re, a_im = x @ c, -(x @ s)
    return cf @ a_re + sf @ a_im, cf @ a_im - sf @ a_re


def irdft2_ref(re: np.ndarray, im: np.ndarray, grid: int, positions: Sequence[int]) -> np.ndarray:
    """Orthonormal ``irfft2`` on a ``G x G`` grid, evaluated at ``positions x positions``.

    Parameters
    ----------
    re, im : numpy.ndarray
        Half spectrum ``[..., G, G // 2 + 1]``.
    grid : int
        ``G``.
    positions : sequence of int
        Kept rows/columns.

    Returns
    -------
    numpy.ndarray
        ``numpy.fft.irfft2(re + 1j * im, s=(G, G), norm="ortho")[..., pos, :][..., pos]``.
    """
    ci, si = idft_matrices(grid, positions)
    wc, ws = irdft_matrices(grid, positions)
    b_re, b_im = ci @ re - si @ im, ci @ im + si @ re
    return b_re @ wc - b_im @ ws


def spectral_cgemm_ref(
    x_re: np.ndarray, x_im: np.ndarray, k_re: np.ndarray, k_im: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frequency complex GEMM over channels: ``Y[b,o,f] = sum_i X[b,i,f] K[o,i,f]``.

    Parameters
    ----------
    x_re, x_im : numpy.ndarray
        ``[B, C_in, F]``.
    k_re, k_im : numpy.ndarray
        ``[C_out, C_in, F]``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``[B, C_out, F]`` real and imaginary parts.
    """
    y = np.einsum("bif,oif->bof", x_re + 1j * x_im, k_re + 1j * k_im)
    return y.real.astype(x_re.dtype), y.imag.astype(x_re.dtype)


def spectral_threshold_ref(
    re: np.ndarray, im: np.ndarray, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """Zero entries with ``|re + i im| <= beta``.

    Parameters
    ----------
    re, im : numpy.ndarray
        Parts of a complex array.
    beta : float
        Threshold.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Thresholded parts.
    """
    keep = np.sqrt(re * re + im * im) > beta
    return np.where(keep, re, 0).astype(re.dtype), np.where(keep, im, 0).astype(im.dtype)


def spectral_tanh_ref(re: np.ndarray, im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``tanh(a) + i tanh(b)``.

    Parameters
    ----------
    re, im : numpy.ndarray
        Parts of a complex array.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``tanh(re), tanh(im)``.
    """
    return np.tanh(re), np.tanh(im)


# --------------------------------------------------------------------------- PrimFuncs


def rdft2_primfunc(batch: int, size: int, grid: int, dtype: str = "float32") -> PrimFunc:
    """Forward orthonormal real 2-D DFT as two matmul stages.

    Signature: ``main(x[batch, M, M], C[M, H], S[M, H], Cf[G, M], Sf[G, M],
    y_re[batch, G, H], y_im[batch, G, H])`` with ``H = G // 2 + 1`` and the matrices of
    :func:`rdft_matrices` / :func:`dft_matrices`.

    Parameters
    ----------
    batch : int
        Number of maps (batch x channels).
    size : int
        Map size ``M``.
    grid : int
        DFT grid ``G >= M``.
    dtype : str
        Float dtype.

    Returns
    -------
    tvm.tirx.PrimFunc
        Unscheduled kernel.
    """
    for name, v in (("batch", batch), ("size", size), ("grid", grid)):
        check_pos(name, v)
    if size > grid:
        raise ValueError(f"size {size} exceeds the grid {grid}")
    B, M, G, H = batch, size, grid, grid // 2 + 1

    @T.prim_func(s_tir=True)
    def rdft2(
        x: T.Buffer((B, M, M), dtype),
        c: T.Buffer((M, H), dtype),
        s: T.Buffer((M, H), dtype),
        cf: T.Buffer((G, M), dtype),
        sf: T.Buffer((G, M), dtype),
        y_re: T.Buffer((B, G, H), dtype),
        y_im: T.Buffer((B, G, H), dtype),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        a_re = T.sblock_alloc_buffer((B, M, H), dtype)
        a_im = T.sblock_alloc_buffer((B, M, H), dtype)
        for b, m, q, n in T.grid(B, M, H, M):
            with T.sblock("rows"):
                vb, vm, vq, vn = T.axis.remap("SSSR", [b, m, q, n])
                with T.init():
                    a_re[vb, vm, vq] = T.Cast(dtype, 0)
                    a_im[vb, vm, vq] = T.Cast(dtype, 0)
                a_re[vb, vm, vq] = a_re[vb, vm, vq] + x[vb, vm, vn] * c[vn, vq]
                a_im[vb, vm, vq] = a_im[vb, vm, vq] - x[vb, vm, vn] * s[vn, vq]
        for b, p, q, m in T.grid(B, G, H, M):
            with T.sblock("cols"):
                vb, vp, vq, vm = T.axis.remap("SSSR", [b, p, q, m])
                with T.init():
                    y_re[vb, vp, vq] = T.Cast(dtype, 0)
                    y_im[vb, vp, vq] = T.Cast(dtype, 0)
                y_re[vb, vp, vq] = (
                    y_re[vb, vp, vq] + cf[vp, vm] * a_re[vb, vm, vq] + sf[vp, vm] * a_im[vb, vm, vq]
                )
                y_im[vb, vp, vq] = (
                    y_im[vb, vp, vq] + cf[vp, vm] * a_im[vb, vm, vq] - sf[vp, vm] * a_re[vb, vm, vq]
                )

    return rdft2


def irdft2_primfunc(batch: int, grid: int, out_size: int, dtype: str = "float32") -> PrimFunc:
    """Inverse orthonormal real 2-D DFT at ``out_size`` kept rows/columns, as matmuls.

    Signature: ``main(x_re[batch, G, H], x_im[batch, G, H], Ci[P, G], Si[P, G],
    Wc[H, P], Ws[H, P], y[batch, P, P])`` with ``P = out_size`` and the matrices of
    :func:`idft_matrices` / :func:`irdft_matrices` (any ``P`` positions: a crop or a
    subsampling).

    Parameters
    ----------
    batch : int
        Number of maps.
    grid : int
        DFT grid ``G``.
    out_size : int
        Number of kept positions per axis.
    dtype : str
        Float dtype.

    Returns
    -------
    tvm.tirx.PrimFunc
        Unscheduled kernel.
    """
    for name, v in (("batch", batch), ("grid", grid), ("out_size", out_size)):
        check_pos(name, v)
    if out_size > grid:
        raise ValueError(f"out_size {out_size} exceeds the grid {grid}")
    B, G, H, P = batch, grid, grid // 2 + 1, out_size

    @T.prim_func(s_tir=True)
    def irdft2(
        x_re: T.Buffer((B, G, H), dtype),
        x_im: T.Buffer((B, G, H), dtype),
        ci: T.Buffer((P, G), dtype),
        si: T.Buffer((P, G), dtype),
        wc: T.Buffer((H, P), dtype),
        ws: T.Buffer((H, P), dtype),
        y: T.Buffer((B, P, P), dtype),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        b_re = T.sblock_alloc_buffer((B, P, H), dtype)
        b_im = T.sblock_alloc_buffer((B, P, H), dtype)
        for b, m, q, p in T.grid(B, P, H, G):
            with T.sblock("rows"):
                vb, vm, vq, vp = T.axis.remap("SSSR", [b, m, q, p])
                with T.init():
                    b_re[vb, vm, vq] = T.Cast(dtype, 0)
                    b_im[vb, vm, vq] = T.Cast(dtype, 0)
                b_re[vb, vm, vq] = (
                    b_re[vb, vm, vq] + ci[vm, vp] * x_re[vb, vp, vq] - si[vm, vp] * x_im[vb, vp, vq]
                )
                b_im[vb, vm, vq] = (
                    b_im[vb, vm, vq] + ci[vm, vp] * x_im[vb, vp, vq] + si[vm, vp] * x_re[vb, vp, vq]
                )
        for b, m, n, q in T.grid(B, P, P, H):
            with T.sblock("cols"):
                vb, vm, vn, vq = T.axis.remap("SSSR", [b, m, n, q])
                with T.init():
                    y[vb, vm, vn] = T.Cast(dtype, 0)
                y[vb, vm, vn] = (
                    y[vb, vm, vn] + b_re[vb, vm, vq] * wc[vq, vn] - b_im[vb, vm, vq] * ws[vq, vn]
                )

    return irdft2


def spectral_cgemm_primfunc(
    batch: int, cin: int, cout: int, nfreq: int, dtype: str = "float32"
) -> PrimFunc:
    """Per-frequency complex GEMM over channels with split real/imaginary parts.

    Signature: ``main(x_re[B, Ci, F], x_im[B, Ci, F], k_re[Co, Ci, F], k_im[Co, Ci, F],
    y_re[B, Co, F], y_im[B, Co, F])``, ``Y[b,o,f] = sum_i X[b,i,f] K[o,i,f]``.

    Parameters
    ----------
    batch, cin, cout, nfreq : int
        Batch, input/output channels, number of frequencies ``G * (G // 2 + 1)``.
    dtype : str
        Float dtype.

    Returns
    -------
    tvm.tirx.PrimFunc
        Unscheduled kernel.
    """
    for name, v in (("batch", batch), ("cin", cin), ("cout", cout), ("nfreq", nfreq)):
        check_pos(name, v)
    B, Ci, Co, Fn = batch, cin, cout, nfreq

    @T.prim_func(s_tir=True)
    def cgemm(
        x_re: T.Buffer((B, Ci, Fn), dtype),
        x_im: T.Buffer((B, Ci, Fn), dtype),
        k_re: T.Buffer((Co, Ci, Fn), dtype),
        k_im: T.Buffer((Co, Ci, Fn), dtype),
        y_re: T.Buffer((B, Co, Fn), dtype),
        y_im: T.Buffer((B, Co, Fn), dtype),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for b, o, f, i in T.grid(B, Co, Fn, Ci):
            with T.sblock("cgemm"):
                vb, vo, vf, vi = T.axis.remap("SSSR", [b, o, f, i])
                with T.init():
                    y_re[vb, vo, vf] = T.Cast(dtype, 0)
                    y_im[vb, vo, vf] = T.Cast(dtype, 0)
                y_re[vb, vo, vf] = (
                    y_re[vb, vo, vf]
                    + x_re[vb, vi, vf] * k_re[vo, vi, vf]
                    - x_im[vb, vi, vf] * k_im[vo, vi, vf]
                )
                y_im[vb, vo, vf] = (
                    y_im[vb, vo, vf]
                    + x_re[vb, vi, vf] * k_im[vo, vi, vf]
                    + x_im[vb, vi, vf] * k_re[vo, vi, vf]
                )

    return cgemm


def spectral_threshold_primfunc(
    batch: int, channels: int, nfreq: int, beta: float, dtype: str = "float32"
) -> PrimFunc:
    """Zero complex entries with ``|z| <= beta`` (split parts).

    Signature: ``main(re[B, C, F], im[B, C, F], out_re[B, C, F], out_im[B, C, F])``.

    Parameters
    ----------
    batch, channels, nfreq : int
        Shape.
    beta : float
        Threshold, ``>= 0``.
    dtype : str
        Float dtype.

    Returns
    -------
    tvm.tirx.PrimFunc
        Unscheduled kernel.
    """
    for name, v in (("batch", batch), ("channels", channels), ("nfreq", nfreq)):
        check_pos(name, v)
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    B, C, Fn = batch, channels, nfreq
    thr = float(beta)

    @T.prim_func(s_tir=True)
    def threshold(
        re: T.Buffer((B, C, Fn), dtype),
        im: T.Buffer((B, C, Fn), dtype),
        out_re: T.Buffer((B, C, Fn), dtype),
        out_im: T.Buffer((B, C, Fn), dtype),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for b, c, f in T.grid(B, C, Fn):
            with T.sblock("threshold"):
                vb, vc, vf = T.axis.remap("SSS", [b, c, f])
                out_re[vb, vc, vf] = T.if_then_else(
                    T.sqrt(re[vb, vc, vf] * re[vb, vc, vf] + im[vb, vc, vf] * im[vb, vc, vf])
                    > T.Cast(dtype, thr),
                    re[vb, vc, vf],
                    T.Cast(dtype, 0),
                )
                out_im[vb, vc, vf] = T.if_then_else(
                    T.sqrt(re[vb, vc, vf] * re[vb, vc, vf] + im[vb, vc, vf] * im[vb, vc, vf])
                    > T.Cast(dtype, thr),
                    im[vb, vc, vf],
                    T.Cast(dtype, 0),
                )

    return threshold


def spectral_tanh_primfunc(
    batch: int, channels: int, nfreq: int, dtype: str = "float32"
) -> PrimFunc:
    """Spectral activation ``tanh(a) + i tanh(b)`` (split parts).

    Signature: ``main(re[B, C, F], im[B, C, F], out_re[B, C, F], out_im[B, C, F])``.

    Parameters
    ----------
    batch, channels, nfreq : int
        Shape.
    dtype : str
        Float dtype.

    Returns
    -------
    tvm.tirx.PrimFunc
        Unscheduled kernel.
    """
    for name, v in (("batch", batch), ("channels", channels), ("nfreq", nfreq)):
        check_pos(name, v)
    B, C, Fn = batch, channels, nfreq

    @T.prim_func(s_tir=True)
    def spectral_tanh(
        re: T.Buffer((B, C, Fn), dtype),
        im: T.Buffer((B, C, Fn), dtype),
        out_re: T.Buffer((B, C, Fn), dtype),
        out_im: T.Buffer((B, C, Fn), dtype),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for b, c, f in T.grid(B, C, Fn):
            with T.sblock("tanh"):
                vb, vc, vf = T.axis.remap("SSS", [b, c, f])
                out_re[vb, vc, vf] = T.tanh(re[vb, vc, vf])
                out_im[vb, vc, vf] = T.tanh(im[vb, vc, vf])

    return spectral_tanh
