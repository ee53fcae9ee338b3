"""Tests for tvm_freq.freq: torch DCT, FreqPointwiseConv2d, FCMask, apply_, MAC accounting."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from tvm_freq.cost_model import FREQ_FEATURES, KernelCostModel, resolve_cost_model
from tvm_freq.dct import block_dct_np, block_idct_np
from tvm_freq.freq import (
    BlockDCT,
    BlockIDCT,
    FreqConfig,
    FreqPointwiseConv2d,
    apply_,
    block_dct,
    block_idct,
    coef_masks,
    fcmask_parameters,
    fcmask_penalty,
    freq_layers,
    hard_counts,
    is_prefix_mask,
    kept_counts,
    mobilenetv2_224_block_size,
    model_macs,
    overhead_block_size,
    pointwise_sites,
    pointwise_skip_reason,
    prefix_masks,
    squash,
    unwrap_,
)
from tvm_freq.macs import masked_macs as _masked_macs
from tvm_freq.macs import pointwise_macs
from tvm_freq.models import get_model

KS = range(2, 9)


def _conv(cin, cout, bias, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 1, bias=bias)
    if bias:
        nn.init.normal_(conv.bias)
    return conv


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("k", KS)
def test_torch_dct_matches_numpy_reference(k):
    x = torch.randn(2, 3, k + 3, 2 * k - 1, dtype=torch.float64)
    c = block_dct(x, k)
    np.testing.assert_allclose(c.numpy(), block_dct_np(x.numpy(), k), atol=1e-12)
    np.testing.assert_allclose(block_idct(c, k, (k + 3, 2 * k - 1)).numpy(), x.numpy(), atol=1e-12)
    m = k + 1
    np.testing.assert_allclose(block_dct(x, k, m).numpy(), c[..., :m].numpy(), atol=1e-12)
    np.testing.assert_allclose(
        block_idct(c[..., :m], k, (k, k)).numpy(),
        block_idct_np(c[..., :m].numpy(), k, (k, k)),
        atol=1e-12,
    )


def test_dct_pads_with_zeros_bottom_right():
    x = torch.randn(1, 2, 5, 6)
    padded = torch.zeros(1, 2, 8, 8)
    padded[:, :, :5, :6] = x
    torch.testing.assert_close(block_dct(x, 4), block_dct(padded, 4))


def test_transform_modules_have_non_persistent_buffers():
    dct, idct = BlockDCT(4, num_coefs=6), BlockIDCT(4)
    assert dct.state_dict() == {} and idct.state_dict() == {}
    dct, idct = dct.double(), idct.double()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    c = dct(x)
    assert c.dtype == torch.float64 and c.shape == (1, 1, 2, 2, 6)
    full = BlockDCT(4).double()(x)
    torch.testing.assert_close(idct(c, (8, 8)), block_idct(full[..., :6], 4, (8, 8)))


@pytest.mark.parametrize("bad", [1, 9, 3.0, True])
def test_bad_block_sizes_rejected(bad):
    with pytest.raises(ValueError, match="block size"):
        block_dct(torch.zeros(1, 1, 4, 4), bad)
    with pytest.raises(ValueError, match="block size"):
        FreqPointwiseConv2d(_conv(2, 2, False), bad)


# --------------------------------------------------------------------------- identity


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("bias", [True, False])
def test_unpruned_wrapper_equals_conv(k, bias):
    conv = _conv(6, 5, bias, seed=k)
    x = torch.randn(2, 6, k + 2, 2 * k + 3)  # k divides neither size
    ref = conv(x)
    for where in ("in", "out", "both"):
        layer = FreqPointwiseConv2d(conv, k, where)
        torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)
        squash(layer)  # hard masks of FCMask == 1 keep everything
        assert layer.mode == "hard"
        torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)
    fixed = FreqPointwiseConv2d(conv, k, learn=False)
    assert fixed.mode == "fixed" and not list(fcmask_parameters(fixed))
    torch.testing.assert_close(fixed(x), ref, atol=1e-5, rtol=1e-5)


def test_wrapping_whole_model_keeps_outputs():
    model = get_model("mobilenetv2-cifar", width_mult=0.5)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    report = apply_(model, FreqConfig(block_size=3, where="both"), example_input=x[:1])
    assert len(report.wrapped) == 34
    torch.testing.assert_close(model(x), ref, atol=1e-4, rtol=1e-4)


def test_weights_are_shared_and_unwrap_restores_conv():
    conv = _conv(4, 3, True)
    layer = FreqPointwiseConv2d(conv, 2)
    assert layer.weight is conv.weight and layer.bias is conv.bias
    model = nn.Sequential(layer)
    unwrap_(model)
    assert isinstance(model[0], nn.Conv2d) and model[0].weight is conv.weight
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(model(x), conv(x))


# --------------------------------------------------------------------------- masks


def test_coefmask_formula_matches_paper():
    nc = 4
    f = torch.tensor([1.0, 0.0, 0.9, 0.5, 0.3])
    m = coef_masks(f, nc)
    expected = [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0.6], [1, 1, 0, 0], [1, 0.2, 0, 0]]
    torch.testing.assert_close(m, torch.tensor(expected))
    # (FCMask - n / num_coefs) * num_coefs, clamped, for any FCMask
    f = torch.rand(50)
    n = torch.arange(16)
    ref = ((f[:, None] - n / 16) * 16).clamp(0, 1)
    torch.testing.assert_close(coef_masks(f, 16), ref)


def test_hard_counts_are_prefixes_by_construction():
    torch.manual_seed(0)
    for nc in (4, 9, 16, 49, 64):
        f = torch.rand(200) * 1.2 - 0.1
        counts = hard_counts(f, nc)
        soft = coef_masks(f, nc)
        assert torch.equal(counts, (soft > 0.5).sum(1))
        masks = prefix_masks(counts, nc)
        assert torch.equal(masks.bool(), soft > 0.5)
        assert is_prefix_mask(masks).all()
        assert counts.min() >= 0 and counts.max() <= nc


def test_is_prefix_mask():
    m = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1], [1, 0.5, 0, 0]])
    assert is_prefix_mask(m).tolist() == [True, True, False, True, False]


def test_squashed_layer_counts_and_output_match_reference():
    conv = _conv(5, 7, True)
    layer = FreqPointwiseConv2d(conv, 3, "both")
    with torch.no_grad():
        layer.fcmask_in.copy_(torch.tensor([1.0, 0.0, 0.3, 0.62, 0.05]))
        layer.fcmask_out.copy_(torch.tensor([0.0, 0.1, 0.3, 0.45, 0.7, 0.9, 1.0]))
    squash(layer)
    kin, kout = layer.kept_counts()
    assert kin.tolist() == [9, 0, 3, 6, 0]  # (F * 9 - n) > 0.5  <=>  n < F * 9 - 0.5
    assert kout.tolist() == [0, 1, 3, 4, 6, 8, 9]
    assert not layer.fcmask_in.requires_grad
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)
    layer = layer.double()
    # Reference: NumPy DCT -> mask -> channel mix -> mask -> IDCT -> crop -> bias.
    c = block_dct_np(x.numpy(), 3) * prefix_masks(kin, 9).numpy()[None, :, None, None, :]
    w = conv.weight.detach().double().numpy()[:, :, 0, 0]
    y = np.einsum("oc,ncbwm->nobwm", w, c) * prefix_masks(kout, 9).numpy()[None, :, None, None]
    ref = block_idct_np(y, 3, (7, 8)) + conv.bias.detach().double().numpy()[None, :, None, None]
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, atol=1e-10)
    counts = kept_counts(nn.Sequential(layer))
    assert counts["0"].kin == kin.tolist() and counts["0"].block_size == 3


def test_truncation_gives_same_result_as_full_computation():
    conv = _conv(4, 3, False)
    layer = FreqPointwiseConv2d(conv, 4, learn=False).double()
    x = torch.randn(1, 4, 9, 9, dtype=torch.float64)
    layer.set_counts([3, 5, 0, 2], None)  # truncated to 5 coefficients
    masks = prefix_masks([3, 5, 0, 2], 16).numpy()[None, :, None, None, :]
    c = block_dct_np(x.numpy(), 4) * masks
    y = np.einsum("oc,ncbwm->nobwm", conv.weight.detach().double().numpy()[:, :, 0, 0], c)
    np.testing.assert_allclose(layer(x).detach().numpy(), block_idct_np(y, 4, (9, 9)), atol=1e-10)
    layer.set_counts([0, 0, 0, 0], None)  # nothing left: output is exactly zero
    assert torch.count_nonzero(layer(x)) == 0


def test_arbitrary_fixed_masks():
    conv = _conv(3, 2, True)
    layer = FreqPointwiseConv2d(conv, 2, learn=False)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1], [1, 1, 0, 0]])
    layer.set_fixed_masks(mask, None)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    layer = layer.double()
    c = block_dct_np(x.numpy(), 2) * mask.numpy()[None, :, None, None, :]
    y = np.einsum("oc,ncbwm->nobwm", conv.weight.detach().double().numpy()[:, :, 0, 0], c)
    ref = block_idct_np(y, 2, (4, 4)) + conv.bias.detach().double().numpy()[None, :, None, None]
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, atol=1e-10)
    with pytest.raises(ValueError, match="not contiguous"):
        layer.kept_counts()
    with pytest.raises(ValueError, match="shape"):
        layer.set_fixed_masks(torch.ones(2, 4), None)
    # Sparse masks are counted per kept (channel, coefficient).
    lm = layer.macs((4, 4))
    assert lm.dct == 4 * 4 * int(mask.sum()) and lm.idct == 4 * 4 * 2 * 4
    assert lm.gemm == 4 * int(mask.sum(0) @ torch.full((4,), 2.0))


def test_generic_mac_count_equals_band_formula_on_prefix_masks():
    rng = np.random.default_rng(3)
    kin, kout = rng.integers(0, 17, 12), rng.integers(0, 17, 9)
    mi, mo = prefix_masks(kin, 16).numpy(), prefix_masks(kout, 16).numpy()
    assert _masked_macs(10, 7, 4, mi, mo, 2) == pointwise_macs(10, 7, 4, kin, kout, 2)


def test_state_dict_round_trip_keeps_mode_and_fixed_masks():
    conv = _conv(3, 4, True)
    a = FreqPointwiseConv2d(conv, 2, "in")
    a.set_fixed_masks(torch.tensor([[1.0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]), None)
    sd = a.state_dict()
    assert "basis" not in sd and "_extra_state" in sd and "fcmask_in" in sd
    b = FreqPointwiseConv2d(_conv(3, 4, True, seed=5), 2, "in")
    b.load_state_dict(sd)
    x = torch.randn(1, 3, 6, 6)
    assert b.mode == "fixed"
    torch.testing.assert_close(b(x), a(x))
    with pytest.raises(ValueError, match="block size"):
        FreqPointwiseConv2d(_conv(3, 4, True), 4, "in").load_state_dict(sd)


# --------------------------------------------------------------------------- learning


def test_mask_gradients_flow():
    conv = _conv(4, 6, True)
    layer = FreqPointwiseConv2d(conv, 3, "both", init=0.9)
    x = torch.randn(2, 4, 9, 9)
    layer(x).square().sum().backward()
    assert layer.fcmask_in.grad is not None and layer.fcmask_in.grad.abs().sum() > 0
    assert layer.fcmask_out.grad.abs().sum() > 0
    assert layer.weight.grad.abs().sum() > 0
    squash(layer)  # hard masks: no gradient reaches FCMask any more
    layer.fcmask_in.grad = None
    layer(x).square().sum().backward()
    assert layer.fcmask_in.grad is None


@pytest.mark.parametrize("weighting", ["mean", "macs"])
def test_penalty_alone_decreases_masks(weighting):
    model = get_model("mobilenetv2-cifar", width_mult=0.5)
    apply_(model, FreqConfig(4, "both"), example_input=torch.randn(1, 3, 32, 32))
    params = fcmask_parameters(model)
    assert len(params) == 68
    before = fcmask_penalty(model, weighting)
    # Both weightings are equal at FCMask == 1: lambda keeps its scale.
    assert before.item() == pytest.approx(68.0)
    opt = torch.optim.SGD(params, lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        fcmask_penalty(model, weighting).backward()
        opt.step()
    after = fcmask_penalty(model, weighting)
    assert after.item() < before.item() - 0.1
    assert all((p < 1).all() for p in params)


def test_macs_weighting_pushes_costly_layers_harder():
    model = get_model("mobilenetv2-cifar", width_mult=0.5)
    apply_(model, FreqConfig(4, "in"), example_input=torch.randn(1, 3, 32, 32))
    fcmask_penalty(model, "macs").backward()
    layers = dict(freq_layers(model))
    first, last = layers["features.2.conv.0.0"], layers["features.18.0"]
    # Per channel-coefficient MACs: P * (k^2 + Cout) is larger for the 32x32 layer.
    g_first, g_last = first.fcmask_in.grad[0].item(), last.fcmask_in.grad[0].item()
    cost_first = 64 * (16 + first.out_channels)
    cost_last = 1 * (16 + last.out_channels)
    assert g_first / g_last == pytest.approx(cost_first / cost_last, rel=1e-4)
    with pytest.raises(ValueError, match="weighting"):
        fcmask_penalty(model, "sum")


def _cost_model(dct: float, gemm: float, idct: float) -> KernelCostModel:
    return KernelCostModel("test", (1.0, 1.0, 1.0, 0.0), (dct, gemm, idct, 1.0, 1.0, 1.0, 1.0))


def test_latency_weighting_with_equal_mac_costs_is_the_macs_weighting():
    model = get_model("mobilenetv2-cifar", width_mult=0.5)
    apply_(model, FreqConfig(4, "both"), example_input=torch.randn(1, 3, 32, 32))
    for p in fcmask_parameters(model):
        p.data.uniform_(0.2, 1.0)
    macs = fcmask_penalty(model, "macs")
    latency = fcmask_penalty(model, "latency", _cost_model(3e-5, 3e-5, 3e-5))
    assert latency.item() == pytest.approx(macs.item(), rel=1e-5)


def test_latency_weighting_follows_the_cost_model_not_the_macs():
    model = get_model("mobilenetv2-cifar", width_mult=0.5)
    apply_(model, FreqConfig(4, "in"), example_input=torch.randn(1, 3, 32, 32))
    shipped = resolve_cost_model("llvm-skylake-avx512-c1")
    # A transform MAC priced at 4x a GEMM MAC (calibrations move both): MACs alone would
    # weigh the two alike.
    coefs = list(shipped.freq)
    coefs[FREQ_FEATURES.index("dct macs")] = 4 * shipped.freq_coefficient("gemm macs")
    costs = dataclasses.replace(shipped, freq=tuple(coefs))
    # Each input-side coefficient costs k^2 DCT MACs and Cout GEMM MACs per block.
    a_dct, a_gemm = costs.freq_coefficient("dct macs"), costs.freq_coefficient("gemm macs")
    fcmask_penalty(model, "latency", costs).backward()
    layers = dict(freq_layers(model))
    first, last = layers["features.2.conv.0.0"], layers["features.18.0"]
    g_first, g_last = first.fcmask_in.grad[0].item(), last.fcmask_in.grad[0].item()
    cost_first = 64 * (16 * a_dct + first.out_channels * a_gemm)
    cost_last = 1 * (16 * a_dct + last.out_channels * a_gemm)
    assert g_first / g_last == pytest.approx(cost_first / cost_last, rel=1e-4)
    # MACs alone would weigh the wide last layer's transforms less.
    assert cost_first / cost_last != pytest.approx(
        64 * (16 + first.out_channels) / (16 + last.out_channels), rel=1e-3
    )
    with pytest.raises(ValueError, match="needs a cost_model"):
        fcmask_penalty(model, "latency")


# --------------------------------------------------------------------------- apply_


def test_apply_reports_wrapped_and_skipped_with_reasons():
    model = get_model("mobilenetv2-cifar", width_mult=0.5)
    x = torch.randn(1, 3, 32, 32)
    report = apply_(model, FreqConfig(), example_input=x)
    assert [w.ordinal for w in report.wrapped] == list(range(34))
    assert report.wrapped[0].name == "features.1.conv.1"
    # Execution order: block 2's expand, then its projection, then block 3's expand.
    names = [w.name for w in report.wrapped[1:4]]
    assert names == ["features.2.conv.0.0", "features.2.conv.2", "features.3.conv.0.0"]
    assert report.wrapped[0].in_hw == (32, 32) and report.wrapped[-1].in_hw == (4, 4)
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["features.0.0"].startswith("kernel (3, 3)")
    assert reasons["features.1.conv.0.0"].startswith("kernel")  # depthwise 3x3
    assert "wrapped 34" in str(report)
    again = apply_(model, FreqConfig(), example_input=x)
    assert not again.wrapped and sum(s.reason == "already wrapped" for s in again.skipped) == 34


def test_apply_skips_strided_and_grouped_1x1():
    model = get_model("resnext29-32x4d", cardinality=2, bottleneck_width=2)
    report = apply_(model, FreqConfig(2), example_input=torch.randn(1, 3, 32, 32))
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["layer2.0.shortcut.0"] == "stride (2, 2) != (1, 1)"
    assert reasons["layer1.0.conv2"].startswith("kernel")
    assert "layer1.0.shortcut.0" in {w.name for w in report.wrapped}
    grouped = nn.Sequential(nn.Conv2d(4, 4, 1, groups=2), nn.Conv2d(4, 4, 1, padding=1))
    assert pointwise_skip_reason(grouped[0]) == "groups 2 != 1"
    assert pointwise_skip_reason(grouped[1]) == "padding (1, 1) != (0, 0)"
    assert pointwise_skip_reason(nn.Conv2d(4, 4, 1, dilation=2)) == "dilation (2, 2) != (1, 1)"


def test_apply_filter_fn_and_block_size_policy():
    model = get_model("mobilenetv2-cifar", width_mult=0.5)
    x = torch.randn(1, 3, 32, 32)

    def policy(name, conv, hw):
        return None if name == "features.18.0" else (2 if hw[0] >= 16 else 4)

    report = apply_(
        model,
        FreqConfig(block_size=policy),
        filter_fn=lambda mod, name: not name.startswith("features.1."),
        example_input=x,
    )
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["features.1.conv.1"] == "rejected by filter_fn"
    assert reasons["features.18.0"] == "block_size policy returned None"
    assert {w.block_size for w in report.wrapped if w.in_hw[0] >= 16} == {2}
    assert {w.block_size for w in report.wrapped if w.in_hw[0] < 16} == {4}
    # Skipped convs keep their ordinal slot: ordinals count all eligible convs.
    assert report.wrapped[0].ordinal == 1
    with pytest.raises(ValueError, match="example_input"):
        apply_(get_model("mobilenetv2-cifar"), FreqConfig(block_size=policy))


def test_block_size_policies():
    p224 = mobilenetv2_224_block_size()
    conv = nn.Conv2d(8, 8, 1)
    assert p224("features.13.conv.2", conv, (14, 14)) == 2
    assert p224("features.14.conv.0.0", conv, (14, 14)) == 7
    assert p224("features.18.0", conv, (7, 7)) == 7
    auto = overhead_block_size(0.4, 4)
    assert auto("a", nn.Conv2d(16, 96, 1), (32, 32)) == 2  # 16 * (1/16 + 1/96) > 0.4
    assert auto("b", nn.Conv2d(80, 480, 1), (4, 4)) == 4  # 16 * (1/80 + 1/480) = 0.23


@pytest.mark.parametrize(
    "kwargs",
    [{"block_size": 1}, {"block_size": 9}, {"where": "middle"}, {"init": 1.5}, {"learn": "yes"}],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        FreqConfig(**kwargs)


def test_pointwise_sites_follow_execution_order():
    class Swapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Conv2d(3, 4, 1)
            self.a = nn.Conv2d(4, 5, 1)

        def forward(self, x):
            return self.a(self.b(x))

    sites = pointwise_sites(Swapped(), torch.randn(1, 3, 5, 5))
    assert [(s.name, s.ordinal) for s in sites] == [("b", 0), ("a", 1)]


# --------------------------------------------------------------------------- MACs


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pw1 = nn.Conv2d(8, 16, 1, bias=False)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw2 = nn.Conv2d(16, 8, 1)
        self.down = nn.Conv2d(8, 8, 1, stride=2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.down(self.pw2(self.dw(self.pw1(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def test_model_macs_counts_every_conv_and_linear():
    model = _Tiny()
    x = torch.randn(1, 3, 8, 8)
    plain = model_macs(model, x)
    other = 64 * 8 * 3 * 9 + 64 * 16 * 9 + 16 * 8 * 8 + 80
    assert plain.other == other
    assert plain.pointwise_dense == 64 * 8 * 16 + 64 * 16 * 8
    assert plain.network_dense == other + plain.pointwise_dense
    assert plain.pointwise_reduction == 1.0
    apply_(model, FreqConfig(4), example_input=x)
    unpruned = model_macs(model, x)
    overhead = 64 * 16 * (8 + 16) * 2  # (Cin + Cout) * k^2 per pixel, both layers
    assert unpruned.transform_overhead == overhead
    assert unpruned.pointwise_freq == plain.pointwise_dense + overhead
    layers = dict(freq_layers(model))
    layers["pw1"].set_counts([1] * 8, None)
    layers["pw2"].set_counts([0] * 16, None)
    pruned = model_macs(model, x)
    p1 = pointwise_macs(8, 8, 4, [1] * 8, [16] * 16)
    p2 = pointwise_macs(8, 8, 4, [0] * 16, [16] * 8)
    assert pruned.pointwise_freq == p1.freq + p2.freq
    assert pruned.pointwise_reduction == pytest.approx(plain.pointwise_dense / (p1.freq + p2.freq))
    assert pruned.network_freq == other + p1.freq + p2.freq
    assert model_macs(model, x, unpruned=True).pointwise_freq == unpruned.pointwise_freq
    assert pruned.as_dict()["layers"][0]["name"] == "pw1"


def test_paper_overhead_for_mobilenetv2_cifar():
    # Paper section 4.1: 4x4 blocks add about 24% to MobileNetV2's CIFAR-10 MACs.
    model = get_model("mobilenetv2-cifar")
    x = torch.randn(1, 3, 32, 32)
    apply_(model, FreqConfig(4, "both"), example_input=x)
    m = model_macs(model, x)
    assert 0.8e8 < m.network_dense < 1.0e8
    assert 1.2 < m.network_freq / m.network_dense < 1.35
