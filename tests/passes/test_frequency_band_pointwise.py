"""FrequencyBandPointwise: structural (what is rewritten), numeric, and must-not-match cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm_freq.kernels import freq_pointwise as K

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.frontend import import_model
from tvm_freq.masks import LayerMask, MaskFile, MaskMismatchError
from tvm_freq.passes import FrequencyBandPointwise, eligible_convs
from tvm_freq.passes.frequency_band_pointwise import check_masks


def _count(mod: tvm.IRModule, op: str) -> int:
    return mod["main"].script(show_meta=False).count(op)


def _mask(ordinal, cout, cin, k, kin=None, kout=None, name=None):
    kin = kin if kin is not None else [k * k // 2] * cin
    kout = kout if kout is not None else [k * k] * cout
    return LayerMask(name or f"l{ordinal}", ordinal, (cout, cin, 1, 1), k, tuple(kin), tuple(kout))


class Mixed(torch.nn.Module):
    """One eligible pointwise conv among convs that must not match."""

    def __init__(self):
        super().__init__()
        self.pw = torch.nn.Conv2d(8, 16, 1)  # eligible
        self.strided = torch.nn.Conv2d(16, 16, 1, stride=2)
        self.grouped = torch.nn.Conv2d(16, 16, 1, groups=4)
        self.k3 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.dilated = torch.nn.Conv2d(16, 16, 3, padding=2, dilation=2)
        self.padded = torch.nn.Conv2d(16, 16, 1, padding=1)

    def forward(self, x):
        x = torch.relu(self.pw(x))
        x = self.strided(x)
        x = self.grouped(x)
        x = self.k3(x)
        x = self.dilated(x)
        return self.padded(x)


@pytest.mark.parametrize("kernel", ["fused", "staged"])
def test_only_eligible_convs_match(kernel):
    mod = import_model(Mixed().eval(), input_shape=(1, 8, 8, 8)).mod
    convs = eligible_convs(mod["main"])
    assert len(convs) == 1
    assert [int(d) for d in convs[0].args[1].ty.shape.values] == [16, 8, 1, 1]
    masks = MaskFile((_mask(0, 16, 8, 4),), num_pointwise=1)
    out = FrequencyBandPointwise(masks, force=True, kernel=kernel)(mod)
    assert _count(out, "R.nn.conv2d") == _count(mod, "R.nn.conv2d") - 1
    if kernel == "fused":
        assert _count(out, "freq_fused") == 1 and _count(out, "freq_gemm") == 0
        # The bias add was folded into the kernel; the ReLU after it stays.
        assert _count(out, "R.add") == _count(mod, "R.add") - 1
        assert _count(out, "R.nn.relu") == _count(mod, "R.nn.relu")
    else:
        assert _count(out, "freq_dct") >= 1 and _count(out, "freq_gemm") >= 1
        assert _count(out, "freq_idct") >= 1 and _count(out, "freq_fused") == 0


def test_bias_and_relu6_epilogue_folded_only_when_supported(tmp_path):
    mod = import_model(Chain().eval(), input_shape=(1, 3, 8, 8)).mod
    masks = MaskFile((_mask(0, 24, 16, 4), _mask(1, 8, 24, 4)), num_pointwise=2)
    rewrite = FrequencyBandPointwise(masks, force=True)
    out = rewrite(mod)
    assert _count(out, "R.nn.conv2d") == 1  # only the 3x3 stem is left
    assert _count(out, "R.clip") == _count(mod, "R.clip") - 1  # pw1's clamp(0, 6)
    assert "bias+clip" in rewrite.decisions[0].kernels[0]
    assert "+" not in rewrite.decisions[1].kernels[0]  # pw2 has no bias: plain kernel
    # Through ONNX: tvm_freq's import gives R.clip (ScalarClipToClip); TVM's importer alone
    # gives call_tir(maximum) -> call_tir(minimum), which other pipelines pass: both fold.
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    from tvm_freq.models import export_onnx

    path = export_onnx(Chain().eval(), tmp_path / "chain.onnx", (1, 3, 8, 8))
    onnx_mod = import_model(path).mod
    onnx_rewrite = FrequencyBandPointwise(masks, force=True)
    onnx_out = onnx_rewrite(onnx_mod)
    assert "bias+clip" in onnx_rewrite.decisions[0].kernels[0]
    assert _count(onnx_out, "R.clip") == _count(onnx_mod, "R.clip") - 1
    raw = relax.transform.FoldConstant()(from_onnx(onnx.load(str(path))))
    assert _count(raw, "minimum") >= 1 and _count(raw, "R.clip") == 0
    raw_rewrite = FrequencyBandPointwise(masks, force=True)
    raw_out = raw_rewrite(raw)
    assert "bias+clip" in raw_rewrite.decisions[0].kernels[0]
    assert _count(raw_out, "minimum") == _count(raw, "minimum") - 1
    # A clip whose bounds are not constants, or a bias that is not per channel, is not
    # folded: the conv is still rewritten and the add stays a Relax op.
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 4, 4), "float32"))
    wc = relax.const(np.ones((16, 8, 1, 1), "float32"))
    full = relax.const(np.ones((1, 16, 4, 4), "float32"))  # not a channel bias
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.nn.conv2d(x, wc), full))
            out_var = bb.emit_output(y)
        bb.emit_func_output(out_var)
    one = MaskFile((_mask(0, 16, 8, 4),), num_pointwise=1)
    out = FrequencyBandPointwise(one, force=True)(bb.get())
    assert _count(out, "freq_fused") == 1 and _count(out, "R.add") == 1


def test_non_constant_weight_and_dynamic_shape_do_not_match():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 4, 4), "float32"))
    w = relax.Var("w", relax.TensorType((16, 8, 1, 1), "float32"))  # a parameter, not a const
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit_output(bb.emit(relax.op.nn.conv2d(x, w)))
        bb.emit_func_output(y)
    assert eligible_convs(bb.get()["main"]) == []

    bb = relax.BlockBuilder()
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n, 8, 4, 4), "float32"))
    wc = relax.const(np.zeros((16, 8, 1, 1), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(bb.emit(relax.op.nn.conv2d(x, wc)))
        bb.emit_func_output(y)
    assert eligible_convs(bb.get()["main"]) == []


def test_unmasked_and_unprofitable_layers_stay_dense():
    mod = import_model(Mixed().eval(), input_shape=(1, 8, 8, 8)).mod
    keep_all = MaskFile((_mask(0, 16, 8, 4, kin=[16] * 8),), num_pointwise=1)
    rewrite = FrequencyBandPointwise(keep_all)
    out = rewrite(mod)
    assert _count(out, "freq_gemm") == 0
    assert rewrite.decisions[0].decision.startswith("dense: unprofitable")
    no_masks = FrequencyBandPointwise(MaskFile((), num_pointwise=1))
    assert _count(no_masks(mod), "freq_gemm") == 0
    assert no_masks.decisions[0].decision == "dense: no mask"


def test_measured_latencies_override_the_mac_model():
    mod = import_model(Chain().eval(), input_shape=(1, 3, 8, 8)).mod
    cheap = _mask(0, 24, 16, 4, kin=[2] * 16)  # far fewer MACs
    dear = _mask(1, 8, 24, 4, kin=[16] * 24)  # more MACs than dense (transform overhead)
    masks = MaskFile((cheap, dear), num_pointwise=2)
    by_macs = FrequencyBandPointwise(masks)
    by_macs(mod)
    assert [d.decision.split()[0] for d in by_macs.decisions] == ["freq", "dense:"]
    # Measured: the cheap layer turned out slower, the dear one faster: time decides.
    timed = FrequencyBandPointwise(masks, latencies={0: (10.0, 12.0), 1: (10.0, 6.0)})
    out = timed(mod)
    assert timed.decisions[0].decision.startswith("dense: slower (1.20x time")
    assert timed.decisions[1].decision.startswith("freq (0.60x time")
    assert (timed.decisions[1].dense_us, timed.decisions[1].freq_us) == (10.0, 6.0)
    assert _count(out, "freq_fused") == 1
    # min_saving applies to time as well; a layer without a measurement falls back to MACs.
    strict = FrequencyBandPointwise(masks, latencies={1: (10.0, 6.0)}, min_saving=0.3)
    strict(mod)
    assert strict.decisions[0].decision == "freq (0.58x MACs)"  # no time: MAC model
    strict = FrequencyBandPointwise(masks, latencies={1: (10.0, 6.0)}, min_saving=0.5)
    strict(mod)
    assert strict.decisions[0].decision == "dense: unprofitable (0.58x MACs)"
    assert strict.decisions[1].decision.startswith("dense: too little gain (0.60x time")
    with pytest.raises(ValueError, match="positive"):
        FrequencyBandPointwise(masks, latencies={0: (0.0, 1.0)})


def test_build_with_measured_profitability():
    net = Chain().eval()
    x = torch.randn(1, 3, 16, 16)
    masks = MaskFile((_mask(0, 24, 16, 4, kin=[3] * 16), _mask(1, 8, 24, 4, kin=[16] * 24)),
                     num_pointwise=2)  # fmt: skip
    model = _build(net, x, masks, profitability="measured", measure_rounds=1)
    layers = model.report.layers
    # Both layers were timed in real runs, and each decision follows its times.
    for d in layers:
        assert d.dense_us > 0 and d.freq_us > 0
        assert d.decision.startswith("freq") == (d.freq_us < d.dense_us)
    ref = _build(net, x, masks, freq_options={"latencies": {
        d.ordinal: (d.dense_us, d.freq_us) for d in layers}})  # fmt: skip
    np.testing.assert_allclose(model(x), ref(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="profitability"):
        _build(net, x, masks, profitability="guess")
    with pytest.raises(ValueError, match="not both"):
        _build(net, x, masks, profitability="measured", freq_options={"latencies": {}})


def test_build_decides_with_the_targets_cost_model(tmp_path):
    """``profitability="auto"`` uses a cost model found in the records (the user's store
    here), says so in the report, and falls back to MACs without one; ``"model"`` without
    one is an error, not a silent fallback."""
    from tvm_freq.cost_model import COST_MODEL_FILE, KernelCostModel
    from tvm_freq.passes.decisions import DecisionRule
    from tvm_freq.target import resolve_target, target_key

    net = Chain().eval()
    x = torch.randn(1, 3, 16, 16)
    masks = MaskFile((_mask(0, 24, 16, 4, kin=[3] * 16), _mask(1, 8, 24, 4, kin=[16] * 24)),
                     num_pointwise=2)  # fmt: skip
    records = tmp_path / "records"
    tuning = Tuning(use_shipped=False, records=records)

    def build(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntunedWarning)
            return tvm_freq.build(net, example_inputs=x, masks=masks, tuning=tuning, **kw)

    plain = build()
    assert plain.report.rule is DecisionRule.MACS
    with pytest.raises(ValueError, match="no kernel cost model"):
        build(profitability="model")
    # A model under which frequency kernels cost nothing: every masked layer is rewritten.
    free = KernelCostModel("t", (1.0, 0, 0, 1.0), (0.0,) * 7)
    free.save(records / target_key(resolve_target(None, 1)) / COST_MODEL_FILE)
    model = build()
    assert model.report.rule is DecisionRule.MODEL
    assert all(d.rewritten and d.reason.name == "PREDICTED_FASTER" for d in model.report.layers)
    assert "layer decisions: model" in str(model.report)
    forced = build(profitability="macs", freq_options={"force": True})
    np.testing.assert_allclose(model(x), forced(x), rtol=1e-5, atol=1e-6)


def test_mismatched_mask_file_names_the_layer():
    mod = import_model(Mixed().eval(), input_shape=(1, 8, 8, 8)).mod
    wrong_shape = MaskFile((_mask(0, 32, 8, 4, name="features.3.conv"),), num_pointwise=1)
    with pytest.raises(MaskMismatchError, match="features.3.conv"):
        check_masks(wrong_shape, mod)
    # Inside a pass, TVM's FFI re-raises it as RuntimeError; the message still names the layer.
    with pytest.raises(RuntimeError, match="features.3.conv"):
        FrequencyBandPointwise(wrong_shape)(mod)
    wrong_count = MaskFile((), num_pointwise=5)
    with pytest.raises(MaskMismatchError, match="5 pointwise convs"):
        tvm_freq.build(Mixed().eval(), input_shape=(1, 8, 8, 8), masks=wrong_count)


class Chain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.pw1 = torch.nn.Conv2d(16, 24, 1)
        self.pw2 = torch.nn.Conv2d(24, 8, 1, bias=False)

    def forward(self, x):
        a = torch.relu(self.stem(x))
        return self.pw2(torch.clamp(self.pw1(a), 0, 6))


def _build(net, x, masks, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        return tvm_freq.build(net, example_inputs=x, masks=masks,
                              tuning=Tuning(use_shipped=False), **kw)  # fmt: skip


@pytest.mark.parametrize("kernel,threads", [("fused", 1), ("fused", 2), ("staged", 1)])
def test_compiled_pruned_model_equals_reference_with_same_masks(kernel, threads):
    net = Chain().eval()
    rng = np.random.default_rng(3)
    m1 = _mask(0, 24, 16, 3, kin=rng.integers(0, 10, 16).tolist())
    m2 = _mask(1, 8, 24, 2, kin=[4] * 24, kout=rng.integers(0, 5, 8).tolist())
    x = torch.randn(1, 3, 10, 11)  # 10x11: neither 2 nor 3 divides both
    model = _build(net, x, MaskFile((m1, m2), num_pointwise=2), threads=threads,
                   freq_options={"force": True, "kernel": kernel})  # fmt: skip
    assert all(d.decision.startswith("freq") for d in model.report.layers)
    with torch.no_grad():
        a = torch.relu(net.stem(x)).double().numpy()
        b = K.freq_pointwise_ref(a, net.pw1.weight.numpy(), net.pw1.bias.numpy(),
                                 K.plan_bands(m1.kin, m1.kout, 3))  # fmt: skip
        ref = K.freq_pointwise_ref(np.clip(b, 0, 6), net.pw2.weight.numpy(), None,
                                   K.plan_bands(m2.kin, m2.kout, 2))  # fmt: skip
    out = model(x)
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-4
    # Masks really prune: the answer differs from the dense model's.
    assert np.abs(out - net(x).detach().numpy()).max() > 1e-3


@pytest.mark.parametrize("kernel", ["fused", "staged"])
def test_unpruned_freq_build_equals_dense_build(kernel):
    net = Chain().eval()
    x = torch.randn(2, 3, 8, 8)  # batch 2
    full = MaskFile((_mask(0, 24, 16, 4, kin=[16] * 16), _mask(1, 8, 24, 4, kin=[16] * 24)),
                    num_pointwise=2)  # fmt: skip
    freq = _build(net, x, full, freq_options={"force": True, "kernel": kernel})
    assert not freq.report.untuned_tasks or kernel == "staged" or all(
        "freq" not in t for t in freq.report.untuned_tasks)
    dense = _build(net, x, None)
    assert freq.report.layers and all(d.decision.startswith("freq") for d in freq.report.layers)
    ref = dense(x)
    assert np.abs(freq(x) - ref).max() / np.abs(ref).max() < 1e-5


def _random_masks(model, rng, block=4):
    """A mask for every eligible 1x1 conv of ``model``, in forward (= ordinal) order."""
    convs = [(name, m) for name, m in model.named_modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
             and m.stride == (1, 1) and m.groups == 1]  # fmt: skip
    layers = []
    for i, (name, m) in enumerate(convs):
        cout, cin = m.weight.shape[:2]
        kin = rng.integers(1, block * block + 1, cin).tolist()
        kout = rng.integers(1, block * block + 1, cout).tolist()
        layers.append(LayerMask(name, i, (cout, cin, 1, 1), block, tuple(kin), tuple(kout)))
    return MaskFile(tuple(layers), num_pointwise=len(convs), model_name="mobilenetv2-cifar")


@pytest.mark.parametrize("source", ["torch", "onnx"])
def test_pruned_mobilenetv2_equals_pytorch_with_same_hard_masks(source, tmp_path):
    """End to end: every pointwise conv pruned, bias/ReLU6/residual epilogues included
    (through ONNX, the first seven blocks, residual ones among them: 34 fused kernels
    take over a minute to compile on a slow CPU)."""
    import copy

    from tvm_freq.freq.export import apply_masks
    from tvm_freq.models import export_onnx, get_model

    net = get_model("mobilenetv2-cifar", width_mult=0.5).eval()
    if source == "onnx":
        net = torch.nn.Sequential(*list(net.features.children())[:7]).eval()
    masks = _random_masks(net, np.random.default_rng(0))
    x = torch.randn(1, 3, 32, 32)
    masked = apply_masks(copy.deepcopy(net), masks, example_input=x).eval()
    with torch.no_grad():
        ref = masked(x).numpy()
        dense = net(x).numpy()
    model = net if source == "torch" else export_onnx(net, tmp_path / "m.onnx", (1, 3, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        built = tvm_freq.build(model, example_inputs=x if source == "torch" else None,
                               masks=masks, tuning=Tuning(use_shipped=False),
                               freq_options={"force": True})  # fmt: skip
    assert sum(d.decision.startswith("freq") for d in built.report.layers) == len(masks.layers)
    out = built(x.numpy())
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-4
    assert np.abs(out - dense).max() / np.abs(dense).max() > 1e-3  # masks really prune


def test_frequency_kernels_default_schedule_then_metaschedule_records(tmp_path):
    """Untuned: the default schedule (no warning). Tuned: MetaSchedule samples its knobs."""
    net = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 1)).eval()
    x = torch.randn(1, 16, 7, 7)
    masks = MaskFile((_mask(0, 32, 16, 7, kin=[10] * 16, kout=[12] * 32),), num_pointwise=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedWarning)  # frequency kernels are not "untuned"
        untuned = tvm_freq.build(net, example_inputs=x, masks=masks, freq_options={"force": True},
                                 tuning=Tuning(records=tmp_path, use_shipped=False))  # fmt: skip
    assert len(untuned.report.default_scheduled) == 1 and not untuned.report.untuned_tasks
    tuning = Tuning(trials=2, num_trials_per_iter=2, records=tmp_path, use_shipped=False,
                    progress=False)  # fmt: skip
    tuned = tvm_freq.build(net, example_inputs=x, masks=masks, freq_options={"force": True},
                           tuning=tuning)  # fmt: skip
    assert tuned.report.trials_run >= 1 and not tuned.report.default_scheduled
    plan = K.plan_bands([10] * 16, [12] * 32, 7)
    weight, bias = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    ref = K.freq_pointwise_ref(x.numpy(), weight, bias, plan)
    for model in (untuned, tuned):
        assert np.abs(model(x) - ref).max() / np.abs(ref).max() < 1e-4
