"""Tests for tvm_freq.dct: zigzag order, orthonormal basis, padding, NumPy references."""

import numpy as np
import pytest

from tvm_freq.dct import (
    JPEG_ZIGZAG_8X8,
    block_dct_np,
    block_idct_np,
    dct_basis,
    padded_size,
    zigzag,
    zigzag_indices,
)

KS = range(2, 9)


def test_zigzag_8x8_is_the_jpeg_table():
    assert tuple(zigzag_indices(8).tolist()) == JPEG_ZIGZAG_8X8


@pytest.mark.parametrize("k", KS)
def test_zigzag_is_a_diagonal_scan(k):
    order = zigzag(k)
    assert sorted(order) == [(r, c) for r in range(k) for c in range(k)]
    assert order[:3] == ((0, 0), (0, 1), (1, 0))
    diag = [r + c for r, c in order]
    assert diag == sorted(diag)  # low frequencies first
    for s in range(2 * k - 1):
        rows = [r for r, c in order if r + c == s]
        # Odd diagonals run top-right -> bottom-left (row grows), even ones the other way.
        assert rows == (sorted(rows) if s % 2 else sorted(rows, reverse=True))
    assert np.array_equal(zigzag_indices(k), [r * k + c for r, c in order])


@pytest.mark.parametrize("k", KS)
def test_basis_is_orthonormal_and_dc_first(k):
    d = dct_basis(k)
    assert d.shape == (k * k, k * k)
    np.testing.assert_allclose(d @ d.T, np.eye(k * k), atol=1e-12)
    np.testing.assert_allclose(d.T @ d, np.eye(k * k), atol=1e-12)
    np.testing.assert_allclose(d[0], np.full(k * k, 1.0 / k))
    # Row n is the separable cosine of frequency zigzag(k)[n].
    u, v = zigzag(k)[-1]
    i = np.arange(k)
    cu = np.sqrt(2 / k) * np.cos(np.pi * (2 * i + 1) * u / (2 * k))
    cv = np.sqrt(2 / k) * np.cos(np.pi * (2 * i + 1) * v / (2 * k))
    np.testing.assert_allclose(d[-1], np.outer(cu, cv).ravel(), atol=1e-12)


@pytest.mark.parametrize("k", [0, 1, 9, 2.5, "4"])
def test_bad_block_size_rejected(k):
    with pytest.raises(ValueError, match="macroblock size"):
        dct_basis(k)


def test_padded_size():
    assert [padded_size(s, 4) for s in (1, 4, 5, 8, 9)] == [4, 4, 8, 8, 12]
    assert padded_size(7, 7) == 7


@pytest.mark.parametrize("k", KS)
def test_roundtrip_and_zero_padding_bottom_right(k):
    rng = np.random.default_rng(k)
    h, w = 2 * k + 1, 3 * k - 1  # k divides neither
    x = rng.standard_normal((2, 3, h, w))
    c = block_dct_np(x, k)
    assert c.shape == (2, 3, padded_size(h, k) // k, padded_size(w, k) // k, k * k)
    np.testing.assert_allclose(block_idct_np(c, k, (h, w)), x, atol=1e-12)
    padded = np.zeros((2, 3, padded_size(h, k), padded_size(w, k)))
    padded[:, :, :h, :w] = x
    np.testing.assert_allclose(block_dct_np(padded, k), c, atol=1e-12)
    # Energy is preserved block by block (orthonormal transform).
    np.testing.assert_allclose((c**2).sum(), (x**2).sum())


def test_truncation_keeps_leading_coefficients():
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8))
    full = block_dct_np(x, 4)
    np.testing.assert_allclose(block_dct_np(x, 4, num_coefs=5), full[..., :5])
    # A truncated IDCT equals the full one with the tail zeroed.
    zeroed = full.copy()
    zeroed[..., 5:] = 0
    np.testing.assert_allclose(
        block_idct_np(full[..., :5], 4, (8, 8)), block_idct_np(zeroed, 4, (8, 8)), atol=1e-12
    )
