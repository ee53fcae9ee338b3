"""DFT-as-matmul kernels: NumPy references against numpy.fft, PrimFuncs against references."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm_freq.kernels import dft


def _run(func, *arrays, outputs):
    """Compile a PrimFunc for llvm, run it, return the output arrays."""
    ex = tvm.compile(func, target="llvm")
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in arrays]
    outs = [tvm.runtime.tensor(np.zeros(s, dtype="float32"), dev) for s in outputs]
    ex["main"](*args, *outs)
    return [o.numpy() for o in outs]


@pytest.mark.parametrize(("size", "grid"), [(5, 7), (6, 8), (4, 4), (3, 6)])
def test_rdft2_ref_matches_numpy_fft(size, grid):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, size, size))
    re, im = dft.rdft2_ref(x, grid)
    ref = np.fft.rfft2(x, s=(grid, grid), norm="ortho")
    np.testing.assert_allclose(re, ref.real, atol=1e-12)
    np.testing.assert_allclose(im, ref.imag, atol=1e-12)


@pytest.mark.parametrize("grid", [7, 8])
def test_irdft2_ref_crops_and_subsamples_like_numpy(grid):
    rng = np.random.default_rng(1)
    spec = np.fft.rfft2(rng.standard_normal((3, grid, grid)), norm="ortho")
    full = np.fft.irfft2(spec, s=(grid, grid), norm="ortho")
    crop = (0, 1, 2, 3, 4)
    np.testing.assert_allclose(
        dft.irdft2_ref(spec.real, spec.imag, grid, crop), full[:, :5, :5], atol=1e-12
    )
    every_other = tuple(range(0, grid, 2))
    np.testing.assert_allclose(
        dft.irdft2_ref(spec.real, spec.imag, grid, every_other), full[:, ::2, ::2], atol=1e-12
    )


def test_matrix_argument_errors():
    with pytest.raises(ValueError, match="exceeds"):
        dft.rdft_matrices(9, 8)
    with pytest.raises(ValueError, match="positions"):
        dft.idft_matrices(8, [8])
    with pytest.raises(ValueError, match="positive"):
        dft.rdft2_primfunc(0, 4, 4)
    with pytest.raises(ValueError, match="beta"):
        dft.spectral_threshold_primfunc(1, 1, 1, -0.5)


def test_rdft2_primfunc_matches_reference():
    b, m, g = 3, 5, 7
    h = g // 2 + 1
    rng = np.random.default_rng(2)
    x = rng.standard_normal((b, m, m)).astype("float32")
    c, s = dft.rdft_matrices(m, g)
    cf, sf = dft.dft_matrices(m, g)
    mats = [a.astype("float32") for a in (c, s, cf, sf)]
    re, im = _run(dft.rdft2_primfunc(b, m, g), x, *mats, outputs=[(b, g, h)] * 2)
    ref = np.fft.rfft2(x.astype(np.float64), s=(g, g), norm="ortho")
    np.testing.assert_allclose(re, ref.real, atol=1e-5)
    np.testing.assert_allclose(im, ref.imag, atol=1e-5)


def test_irdft2_primfunc_matches_reference():
    b, g, p = 2, 8, 6
    rng = np.random.default_rng(3)
    spec = np.fft.rfft2(rng.standard_normal((b, g, g)), norm="ortho")
    ci, si = dft.idft_matrices(g, range(p))
    wc, ws = dft.irdft_matrices(g, range(p))
    args = [a.astype("float32") for a in (spec.real, spec.imag, ci, si, wc, ws)]
    (y,) = _run(dft.irdft2_primfunc(b, g, p), *args, outputs=[(b, p, p)])
    ref = np.fft.irfft2(spec, s=(g, g), norm="ortho")[:, :p, :p]
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_spectral_cgemm_primfunc_matches_complex_einsum():
    b, ci, co, f = 2, 3, 4, 10
    rng = np.random.default_rng(4)
    xr, xi = rng.standard_normal((2, b, ci, f)).astype("float32")
    kr, ki = rng.standard_normal((2, co, ci, f)).astype("float32")
    yr, yi = _run(dft.spectral_cgemm_primfunc(b, ci, co, f), xr, xi, kr, ki,
                  outputs=[(b, co, f)] * 2)  # fmt: skip
    ref = np.einsum("bif,oif->bof", xr + 1j * xi, kr + 1j * ki)
    np.testing.assert_allclose(yr, ref.real, atol=1e-5)
    np.testing.assert_allclose(yi, ref.imag, atol=1e-5)
    rr, ri = dft.spectral_cgemm_ref(xr, xi, kr, ki)
    np.testing.assert_allclose(rr, ref.real, atol=1e-5)
    np.testing.assert_allclose(ri, ref.imag, atol=1e-5)


def test_threshold_and_tanh_primfuncs():
    b, c, f = 2, 3, 16
    rng = np.random.default_rng(5)
    re, im = (2 * rng.standard_normal((2, b, c, f))).astype("float32")
    beta = 1.3
    tr, ti = _run(dft.spectral_threshold_primfunc(b, c, f, beta), re, im,
                  outputs=[(b, c, f)] * 2)  # fmt: skip
    rr, ri = dft.spectral_threshold_ref(re, im, beta)
    np.testing.assert_array_equal(tr, rr)
    np.testing.assert_array_equal(ti, ri)
    kept = np.abs(re + 1j * im) > beta
    assert 0 < kept.sum() < kept.size  # the case is not trivial
    assert np.all(tr[~kept] == 0) and np.all(ti[~kept] == 0)
    hr, hi = _run(dft.spectral_tanh_primfunc(b, c, f), re, im, outputs=[(b, c, f)] * 2)
    np.testing.assert_allclose(hr, np.tanh(re), atol=1e-6)
    np.testing.assert_allclose(hi, np.tanh(im), atol=1e-6)


def test_primfunc_is_unscheduled_tvmscript():
    func = dft.rdft2_primfunc(1, 4, 6)
    assert isinstance(func, tvm.tirx.PrimFunc)
    text = func.script()
    # Plain loop nests with sblocks, no thread bindings or schedule annotations.
    assert "T.sblock" in text and "thread_binding" not in text
