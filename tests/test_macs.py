"""Tests for tvm_freq.macs: the paper's MAC formulas and band sizes."""

import numpy as np
import pytest

from tvm_freq.macs import band_sizes, pointwise_macs


@pytest.mark.parametrize(
    ("h", "w", "k", "cin", "cout"),
    [(32, 32, 4, 16, 96), (8, 8, 2, 64, 384), (14, 14, 7, 96, 576), (12, 6, 3, 5, 7)],
)
def test_unpruned_overhead_ratio_matches_paper(h, w, k, cin, cout):
    m = pointwise_macs(h, w, k, [k * k] * cin, [k * k] * cout)
    assert m.dense == h * w * cin * cout
    assert m.gemm == m.dense  # every coefficient of every channel: the same work
    assert (m.dct + m.idct) / m.dense == pytest.approx((cin + cout) * k * k / (cin * cout))
    assert m.dct == cin * h * w * k * k and m.idct == cout * h * w * k * k
    assert m.ratio == pytest.approx(1 + (cin + cout) * k * k / (cin * cout))


def test_band_sizes_hand_example():
    cin_n, cout_n = band_sizes([4, 1, 0, 2], [3, 3], 2)
    assert cin_n.tolist() == [3, 2, 1, 1]  # channels keeping coefficient n
    assert cout_n.tolist() == [2, 2, 2, 0]


def test_pruned_counts_against_brute_force():
    rng = np.random.default_rng(1)
    k, h, w, batch = 3, 7, 5, 2  # 3 divides neither: padded to 9 x 6
    kin, kout = rng.integers(0, 10, 6), rng.integers(0, 10, 4)
    m = pointwise_macs(h, w, k, kin, kout, batch)
    blocks = batch * 3 * 2
    gemm = sum(
        int(kin[c] > n) * int(kout[o] > n) for n in range(9) for c in range(6) for o in range(4)
    )
    assert m.gemm == blocks * gemm
    assert m.dct == blocks * 9 * kin.sum() and m.idct == blocks * 9 * kout.sum()
    assert m.dense == batch * h * w * 6 * 4


@pytest.mark.parametrize(("kin", "kout"), [([5], [1]), ([-1], [1]), ([[1]], [1])])
def test_bad_counts_rejected(kin, kout):
    with pytest.raises(ValueError, match="counts in"):
        band_sizes(kin, kout, 2)
