"""The kernel cost model: features, fitting, files, and the pass deciding with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tvm_freq.band_plan import kernel_macs
from tvm_freq.cost_model import (
    COST_MODEL_FILE,
    DENSE_FEATURES,
    FREQ_FEATURES,
    KernelCostModel,
    LayerShape,
    cost_model_file,
    fit_cost_model,
    layer_features,
    load_cost_model,
    resolve_cost_model,
    shipped_cost_models,
)


def _layer(cin=64, cout=96, hw=14, k=7, keep=10, seed=0):
    rng = np.random.default_rng(seed)
    kin = rng.integers(1, keep + 1, cin).tolist()
    kout = rng.integers(1, keep + 1, cout).tolist()
    plan, macs = kernel_macs(kin, kout, k, (1, cin, hw, hw), cout)
    return LayerShape.from_plan((1, cin, hw, hw), cout, plan, macs), kin, kout


def test_features_count_what_each_kernel_computes():
    layer, _, _ = _layer()
    dense, freq = layer_features(layer)
    assert len(dense) == len(DENSE_FEATURES) and len(freq) == len(FREQ_FEATURES)
    assert dense[0] == 14 * 14 * 64 * 96  # the dense conv's MACs
    assert tuple(freq[:3]) == (layer.dct_macs, layer.gemm_macs, layer.idct_macs)
    # 14 wide with k=7: the epilogue stores 7-float block rows (4 + 2 + 1 floats).
    assert freq[4] == 14 * 14 * 96 / 4
    one_block, _, _ = _layer(hw=7)
    assert layer_features(one_block)[1][4] == 7 * 7 * 96 / 16  # a whole block per store


def test_fit_recovers_a_linear_model_and_decides_like_it():
    true = KernelCostModel("t", (2e-5, 1e-4, 1e-3, 2.0), (3e-5, 2e-5, 4e-5, 1e-4, 1e-3, 0, 5.0))
    layers = [_layer(cin=c, cout=o, hw=h, keep=q, seed=i)[0]
              for i, (c, o, h, q) in enumerate([(32, 192, 28, 6), (64, 384, 14, 20),
                                                (96, 576, 14, 12), (160, 960, 7, 30),
                                                (384, 64, 14, 25), (576, 96, 14, 8),
                                                (24, 144, 56, 10), (320, 1280, 7, 16),
                                                (144, 24, 56, 40), (192, 32, 28, 3)])]  # fmt: skip
    times = [true.predict(x) for x in layers]
    fitted = fit_cost_model(layers, [t[0] for t in times], [t[1] for t in times], "t")
    for x, (d, f) in zip(layers, times, strict=True):
        pd, pf = fitted.predict(x)
        assert pd == pytest.approx(d, rel=1e-3) and pf == pytest.approx(f, rel=1e-3)
    assert fitted.samples == len(layers)
    assert min(*fitted.dense, *fitted.freq) >= 0


def test_save_load_and_lookup_order(tmp_path):
    model = KernelCostModel("llvm-x", (1.0, 0, 0, 0), (0.5, 0, 0, 0, 0, 0, 0), 3, "cmd")
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    model.save(shipped / "llvm-x" / COST_MODEL_FILE)
    assert load_cost_model([user, shipped], "llvm-x") == model
    assert load_cost_model([user, shipped], "llvm-y") is None
    mine = KernelCostModel("llvm-x", (2.0, 0, 0, 0), (0.5, 0, 0, 0, 0, 0, 0))
    mine.save(user / "llvm-x" / COST_MODEL_FILE)
    assert load_cost_model([user, shipped], "llvm-x") == mine  # the user's store first


def test_a_model_of_this_cpu_comes_before_the_targets_own_in_each_store(tmp_path):
    target_wide = KernelCostModel("llvm-x", (1.0, 0, 0, 0), (0.5, 0, 0, 0, 0, 0, 0))
    zen = KernelCostModel("llvm-x", (3.0, 0, 0, 0), (0.5, 0, 0, 0, 0, 0, 0))
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    target_wide.save(shipped / "llvm-x" / COST_MODEL_FILE)
    zen.save(shipped / "llvm-x" / cost_model_file("amd-family26-model2"))
    assert load_cost_model([user, shipped], "llvm-x", "amd-family26-model2") == zen
    assert load_cost_model([user, shipped], "llvm-x", "intel-family6-model143") == target_wide
    assert load_cost_model([user, shipped], "llvm-x") == target_wide  # no CPU: the target's
    mine = KernelCostModel("llvm-x", (2.0, 0, 0, 0), (0.5, 0, 0, 0, 0, 0, 0))
    mine.save(user / "llvm-x" / COST_MODEL_FILE)
    # The user's own calibration (of their machine) before anything shipped.
    assert load_cost_model([user, shipped], "llvm-x", "amd-family26-model2") == mine
    with pytest.raises(ValueError, match="CPU name"):
        cost_model_file("../x")


def test_builds_for_this_machine_look_for_its_cpu_model(tmp_path):
    import tvm_freq.pipeline as pipeline
    from tvm_freq import Tuning
    from tvm_freq.target import host_cpu, host_target, resolve_target, target_key

    cpu = host_cpu()
    if not cpu:
        pytest.skip("/proc/cpuinfo names no CPU model here")
    assert cpu.count("-") == 2 and "family" in cpu and "model" in cpu
    here = host_target()
    other = resolve_target("llvm -mcpu=znver1")  # never what host_target() picks
    for target in (here, other):
        key = target_key(target)
        KernelCostModel(key, (1.0, 0, 0, 0), (0.5,) + (0,) * 6).save(
            tmp_path / key / COST_MODEL_FILE)
        KernelCostModel(key, (2.0, 0, 0, 0), (0.5,) + (0,) * 6).save(
            tmp_path / key / cost_model_file(cpu))
    tuning = Tuning(records=tmp_path, use_shipped=False)
    assert pipeline.find_cost_model(tuning, here).dense[0] == 2.0  # this CPU's model
    assert pipeline.find_cost_model(tuning, other).dense[0] == 1.0  # built for elsewhere


def test_bad_models_and_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="coefficients"):
        KernelCostModel("t", (1.0,), (1.0,) * 7)
    with pytest.raises(ValueError, match=">= 0"):
        KernelCostModel("t", (-1.0, 0, 0, 0), (0.0,) * 7)
    path = tmp_path / COST_MODEL_FILE
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a usable cost model"):
        KernelCostModel.load(path)
    data = json.loads(json.dumps({"target": "t", "dense": [0] * 4, "freq": [0] * 7,
                                  "dense_features": ["old"], "freq_features": []}))  # fmt: skip
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="recalibrate"):
        KernelCostModel.load(path)
    with pytest.raises(ValueError, match="one dense and one frequency time"):
        fit_cost_model([], [], [], "t")


def test_resolve_takes_a_model_a_file_or_a_shipped_key(tmp_path):
    assert "llvm-skylake-avx512-c1" in shipped_cost_models()
    shipped = resolve_cost_model("llvm-skylake-avx512-c1")
    assert shipped.target == "llvm-skylake-avx512-c1"
    assert shipped.freq_coefficient("gemm macs") == shipped.freq[FREQ_FEATURES.index("gemm macs")]
    assert resolve_cost_model(shipped) is shipped
    path = shipped.save(tmp_path / COST_MODEL_FILE)
    assert resolve_cost_model(path) == shipped
    assert resolve_cost_model(str(path)) == shipped
    with pytest.raises(ValueError, match="no cost model 'nope'.*llvm-skylake-avx512-c1"):
        resolve_cost_model("nope")
    with pytest.raises(ValueError, match="unknown feature"):
        shipped.freq_coefficient("flops")


def test_the_pass_decides_with_the_model():
    """Structural: the same layer is rewritten or kept by the model alone, with typed
    reasons, and measured latencies still win over the model."""
    import torch

    from tvm_freq.frontend import import_model
    from tvm_freq.masks import LayerMask, MaskFile
    from tvm_freq.passes.decisions import DecisionReason
    from tvm_freq.passes.frequency_band_pointwise import plan_layers

    conv = torch.nn.Sequential(torch.nn.Conv2d(64, 96, 1)).eval()
    mod = import_model(conv, example_inputs=(torch.zeros(1, 64, 14, 14),)).mod
    _, kin, kout = _layer()
    masks = MaskFile((LayerMask("0", 0, (96, 64, 1, 1), 7, kin, kout),), 1)
    cheap_freq = KernelCostModel("t", (1e-3, 0, 0, 0), (1e-6, 1e-6, 1e-6, 0, 0, 0, 0))
    dear_freq = KernelCostModel("t", (1e-6, 0, 0, 0), (1e-3, 1e-3, 1e-3, 0, 0, 0, 0))
    (fast,) = plan_layers(mod, masks, cost_model=cheap_freq)
    (slow,) = plan_layers(mod, masks, cost_model=dear_freq)
    assert fast.rewritten and fast.reason is DecisionReason.PREDICTED_FASTER
    assert not slow.rewritten and slow.reason is DecisionReason.PREDICTED_SLOWER
    assert "predicted time" in slow.decision and slow.dense_us is None
    (measured,) = plan_layers(mod, masks, cost_model=dear_freq, latencies={0: (10.0, 5.0)})
    assert measured.rewritten and measured.reason is DecisionReason.FASTER
    # The staged kernels are not modelled: the MAC rule decides them.
    (staged,) = plan_layers(mod, masks, cost_model=dear_freq, kernel="staged")
    assert staged.reason in (DecisionReason.PROFITABLE_MACS, DecisionReason.UNPROFITABLE)
    with pytest.raises(TypeError, match="KernelCostModel"):
        plan_layers(mod, masks, cost_model={"dense": 1})
    # Masks written from a model that applies them are banded whatever the model predicts:
    # dense would compute a different function than the model they come from.
    trained = MaskFile(masks.layers, 1, trained=True)
    (kept,) = plan_layers(mod, trained, cost_model=dear_freq)
    assert kept.rewritten and kept.reason is DecisionReason.TRAINED
    assert kept.decision.startswith("freq")
