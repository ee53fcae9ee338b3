"""DFT matrices (NumPy): the two matmul stages equal numpy.fft (kept from the removed
``tests/kernels/test_dft.py`` when the unused TVMScript DFT kernels were deleted)."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_freq.dft_matrices import dft_matrices, idft_matrices, irdft_matrices, rdft_matrices


def _rdft2(x, grid):
    m = x.shape[-1]
    c, s = rdft_matrices(m, grid)
    cf, sf = dft_matrices(m, grid)
    a_re, a_im = x @ c, -(x @ s)
    return cf @ a_re + sf @ a_im, cf @ a_im - sf @ a_re


def _irdft2(re, im, grid, positions):
    ci, si = idft_matrices(grid, positions)
    wc, ws = irdft_matrices(grid, positions)
    b_re, b_im = ci @ re - si @ im, ci @ im + si @ re
    return b_re @ wc - b_im @ ws


@pytest.mark.parametrize(("size", "grid"), [(5, 7), (6, 8), (4, 4), (3, 6)])
def test_rdft2_matches_numpy_fft(size, grid):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, size, size))
    re, im = _rdft2(x, grid)
    ref = np.fft.rfft2(x, s=(grid, grid), norm="ortho")
    np.testing.assert_allclose(re, ref.real, atol=1e-12)
    np.testing.assert_allclose(im, ref.imag, atol=1e-12)


@pytest.mark.parametrize("grid", [7, 8])
def test_irdft2_crops_and_subsamples_like_numpy(grid):
    rng = np.random.default_rng(1)
    spec = np.fft.rfft2(rng.standard_normal((3, grid, grid)), norm="ortho")
    full = np.fft.irfft2(spec, s=(grid, grid), norm="ortho")
    crop = (0, 1, 2, 3, 4)
    np.testing.assert_allclose(_irdft2(spec.real, spec.imag, grid, crop), full[:, :5, :5],
                               atol=1e-12)  # fmt: skip
    every_other = tuple(range(0, grid, 2))
    np.testing.assert_allclose(_irdft2(spec.real, spec.imag, grid, every_other),
                               full[:, ::2, ::2], atol=1e-12)  # fmt: skip


def test_matrix_argument_errors():
    with pytest.raises(ValueError, match="exceeds"):
        rdft_matrices(9, 8)
    with pytest.raises(ValueError, match="positions"):
        idft_matrices(8, [8])
