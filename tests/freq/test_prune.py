"""Tests for tvm_freq.prune: calibration statistics, the four strategies, sweeps, bands."""

import numpy as np
import pytest
import torch
from torch import nn

from tvm_freq.dct import block_dct_np
from tvm_freq.freq import FreqConfig, KeptCounts, apply_, freq_layers, is_prefix_mask, model_macs
from tvm_freq.freq.prune import (
    STRATEGIES,
    LayerStats,
    apply_counts,
    apply_profile,
    band_masks_from_energy,
    collect_stats,
    contiguity_report,
    find_threshold,
    profile_masks,
    strategy_mask,
    sweep,
)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 12, 1)
        self.b = nn.Conv2d(12, 8, 1, bias=False)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.b(torch.relu(self.a(x))).mean((2, 3)))


def _wrapped(where="in", k=4):
    net = _Net()
    x = torch.randn(1, 3, 12, 12)
    apply_(net, FreqConfig(k, where), example_input=x)
    return net, x


def _batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    # Smooth images (low frequencies dominate), as real activations tend to be.
    out = []
    for _ in range(n):
        x = torch.randn(4, 3, 6, 6, generator=g)
        out.append((torch.nn.functional.interpolate(x, size=(12, 12), mode="bilinear"), None))
    return out


# --------------------------------------------------------------------------- strategies


def test_strategy_granularities():
    rng = np.random.default_rng(0)
    imp = rng.random((10, 16))
    ch = strategy_mask(imp, "channel", 0.3)
    assert all(row.all() or not row.any() for row in ch)
    assert (~ch.any(1)).sum() == 3
    assert set(np.argsort(imp.sum(1))[:3]) == set(np.flatnonzero(~ch.any(1)))
    co = strategy_mask(imp, "coefficient", 0.25)
    assert all(col.all() or not col.any() for col in co.T)
    assert (~co.any(0)).sum() == 4
    cc = strategy_mask(imp, "channel-coefficient", 0.4)
    assert (~cc).sum() == 64
    assert imp[~cc].max() <= imp[cc].min()  # the least important elements go
    assert strategy_mask(imp, "band", 0.0).all() and not strategy_mask(imp, "band", 1.0).any()


def test_band_masks_are_prefixes_by_construction():
    rng = np.random.default_rng(1)
    for trial in range(30):
        c, nc = rng.integers(1, 20), rng.choice([4, 9, 16, 49, 64])
        imp = rng.random((c, nc)) * (rng.random((c, nc)) < 0.7)  # zeros make ties
        t = rng.random()
        band = strategy_mask(imp, "band", t)
        assert is_prefix_mask(band).all(), trial
        assert (~band).sum() == round(t * c * nc)


def test_band_equals_channel_coefficient_when_importance_is_monotone():
    rng = np.random.default_rng(2)
    imp = np.sort(rng.random((8, 9)), axis=1)[:, ::-1] * rng.random((8, 1))
    for t in (0.2, 0.5, 0.8):
        cc = strategy_mask(imp, "channel-coefficient", t)
        assert contiguity_report({"l": cc}).fraction == 1.0
        # Both remove the same number of elements; bands lose at most a little importance.
        band = strategy_mask(imp, "band", t)
        assert imp[band].sum() <= imp[cc].sum() + 1e-12
        assert imp[band].sum() >= 0.9 * imp[cc].sum()


@pytest.mark.parametrize(
    ("imp", "strategy", "t", "match"),
    [
        (np.ones((2, 4)), "random", 0.5, "unknown strategy"),
        (np.ones((2, 4)), "band", 1.5, "threshold"),
        (-np.ones((2, 4)), "band", 0.5, "non-negative"),
        (np.ones(4), "band", 0.5, r"\[C, k\*k\]"),
    ],
)
def test_strategy_mask_rejects_bad_input(imp, strategy, t, match):
    with pytest.raises(ValueError, match=match):
        strategy_mask(imp, strategy, t)


# --------------------------------------------------------------------------- calibration


def test_collect_stats_matches_numpy_energy():
    net, _ = _wrapped("both")
    batches = _batches()
    stats = collect_stats(net, batches)
    assert set(stats) == {"a", "b"}
    xs = np.concatenate([b[0].numpy() for b in batches]).astype(np.float64)
    c = block_dct_np(xs, 4)  # [N, 3, 3, 3, 16]
    blocks = c.shape[0] * c.shape[2] * c.shape[3]
    np.testing.assert_allclose(stats["a"].in_energy, (c**2).sum((0, 2, 3)) / blocks, rtol=1e-4)
    np.testing.assert_allclose(
        stats["a"].in_magnitude, np.abs(c).sum((0, 2, 3)) / blocks, rtol=1e-4
    )
    assert stats["a"].blocks == blocks
    w = net.a.weight.detach().double().numpy()[:, :, 0, 0]
    out = np.einsum("oc,ncbwm->nobwm", w, c)  # conv output coefficients, bias excluded
    np.testing.assert_allclose(stats["a"].out_energy, (out**2).sum((0, 2, 3)) / blocks, rtol=1e-4)
    assert stats["b"].out_channels == 8
    # Calibration runs in eval mode and restores the training flag.
    assert net.training


def test_collect_stats_needs_wrapped_layers():
    with pytest.raises(ValueError, match="apply_"):
        collect_stats(_Net(), _batches())


# --------------------------------------------------------------------------- sweeps


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sweep_reduction_grows_and_masks_are_restored(strategy):
    net, x = _wrapped("both")
    stats = collect_stats(net, _batches())
    evals = []
    points = sweep(
        net, stats, strategy, [0.0, 0.3, 0.6, 0.9], x, eval_fn=lambda m: evals.append(1) or 0.5
    )
    reds = [p.pointwise_reduction for p in points]
    assert reds == sorted(reds) and reds[-1] > reds[0]
    assert len(evals) == 4 and points[0].accuracy == 0.5
    assert points[0].kept_fraction == 1.0 and points[-1].kept_fraction < 0.2
    assert all(layer.mode == "soft" for _, layer in freq_layers(net))  # restored


def test_coefficient_pruning_truncates_both_sides():
    net, x = _wrapped("in")
    stats = collect_stats(net, _batches())
    masks = profile_masks(stats, "coefficient", 0.5, where="in")
    mi, mo = masks["a"]
    assert mi.shape == (3, 16) and mo.shape == (12, 16)
    assert (mi[0] == mo[0]).all() and mi.sum(1).tolist() == [8] * 3
    apply_profile(net, masks)
    # The output mask changes nothing numerically: dropped output coefficients are zero.
    y = net(x)
    net.a.set_fixed_masks(torch.from_numpy(mi.astype(np.float32)), None)
    torch.testing.assert_close(net(x), y)


def test_find_threshold_reaches_target_and_is_minimal():
    net, x = _wrapped("both")
    stats = collect_stats(net, _batches())
    base = model_macs(net, x).pointwise_reduction
    pt = find_threshold(net, stats, "band", 2.0, x, tol=1e-3)
    assert pt.pointwise_reduction >= 2.0 > base
    below = sweep(net, stats, "band", [max(pt.threshold - 2e-3, 0)], x)[0]
    assert below.pointwise_reduction < 2.0
    assert all(layer.mode == "soft" for _, layer in freq_layers(net))
    kept = find_threshold(net, stats, "band", 2.0, x, keep=True)
    assert model_macs(net, x).pointwise_reduction == pytest.approx(kept.pointwise_reduction)
    with pytest.raises(ValueError, match="target_reduction"):
        find_threshold(net, stats, "band", 0, x)


def test_contiguity_report_counts_prefix_rows():
    masks = {
        "a": np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]),
        "b": (np.array([[1, 1, 1, 1]]), None),
    }
    rep = contiguity_report(masks)
    assert (rep.contiguous, rep.total) == (3, 4)
    assert rep.fraction == 0.75 and rep.per_layer["a"] == (2, 3)
    net, _ = _wrapped("in")
    stats = collect_stats(net, _batches())
    apply_profile(net, profile_masks(stats, "channel-coefficient", 0.3))
    from_model = contiguity_report(net)
    assert from_model.total == 3 + 12 and 0 < from_model.fraction <= 1


# --------------------------------------------------------------------------- energy bands


def test_band_counts_from_numpy_energy():
    e = np.array([[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0, 0], [0.25] * 4, [0, 0, 0, 1]])
    assert band_masks_from_energy(e, 0.99).tolist() == [1, 2, 0, 4, 4]
    assert band_masks_from_energy(e, 0.5).tolist() == [1, 1, 0, 2, 4]
    assert band_masks_from_energy(e, 1.0).tolist() == [1, 2, 0, 4, 4]
    with pytest.raises(ValueError, match="energy"):
        band_masks_from_energy(e, 0.0)
    with pytest.raises(ValueError, match="k\\*k"):
        band_masks_from_energy(np.ones((2, 5)))


def test_band_counts_from_stats_and_model():
    net, x = _wrapped("in")
    batches = _batches()
    stats = collect_stats(net, batches)
    counts = band_masks_from_energy(stats, 0.9)
    assert set(counts) == {"a", "b"} and isinstance(counts["a"], KeptCounts)
    assert counts["a"].kout == [16] * 12  # inputs only: outputs unmasked
    # Smooth inputs: a few low-frequency coefficients hold 90% of the energy.
    assert max(counts["a"].kin) < 16
    st = stats["a"]
    kin = counts["a"].kin
    for c in range(3):
        cum = np.cumsum(st.in_energy[c]) / st.in_energy[c].sum()
        assert cum[kin[c] - 1] >= 0.9 and (kin[c] == 1 or cum[kin[c] - 2] < 0.9)
    direct = band_masks_from_energy(net, 0.9, batches=batches)
    assert direct == counts
    assert band_masks_from_energy({"x": st.in_energy}, 0.9)["x"].tolist() == kin
    apply_counts(net, counts)
    assert net.a.kept_counts()[0].tolist() == kin
    assert (
        model_macs(net, x).pointwise_reduction
        > model_macs(net, x, unpruned=True).pointwise_reduction
    )
    with pytest.raises(ValueError, match="batches"):
        band_masks_from_energy(net)
    with pytest.raises(ValueError, match="block"):
        apply_counts(net, {"a": KeptCounts(2, kin, [4] * 12)})


def test_layer_stats_importance_sides():
    st = LayerStats("x", 2, np.ones((2, 4)), np.full((2, 4), 2.0), None, None, 8, 3)
    assert st.importance("in", "magnitude")[0, 0] == 2.0
    assert st.importance("out") is None
    with pytest.raises(ValueError, match="no output statistics"):
        profile_masks({"x": st}, "band", 0.5, where="out")
