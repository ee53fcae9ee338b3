"""Distillation of masks (:mod:`tvm_freq.train.distill`) on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tvm_freq import freq
from tvm_freq.train.distill import (
    Agreement,
    DistillConfig,
    DistillStopped,
    check_logits,
    distill_loss,
    distill_masks,
    top1_agreement,
)


class Tiny(nn.Module):
    """Pointwise convs wide enough that a 4x4 band saves MACs."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.pw1 = nn.Conv2d(32, 64, 1)
        self.bn = nn.BatchNorm2d(64)
        self.pw2 = nn.Conv2d(64, 64, 1)
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn(self.pw1(x)))
        x = torch.relu(self.pw2(x))
        return self.head(x.mean((2, 3)))


def _smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 4, 4, generator=g)
    return nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return Tiny().eval()


def _cfg(tmp_path=None, **kw) -> DistillConfig:
    base = dict(
        target_reduction=1.2,
        block_size=4,
        mask_steps=12,
        refine_steps=4,
        batch_size=8,
        mask_lr=0.05,
        lam=0.05,
        lam_adapt=1.3,
        progress=False,
        checkpoint_dir=None if tmp_path is None else str(tmp_path),
        checkpoint_every=5,
    )
    base.update(kw)
    return DistillConfig(**base)


def test_mask_gradients_flow_from_the_kl_loss():
    model = _model()
    student = _model()
    freq.apply_(student, freq.FreqConfig(block_size=4), example_input=_smooth_images(1))
    with torch.no_grad():
        for p in freq.fcmask_parameters(student):
            p.fill_(0.6)  # inside the ramp: masks are fractional and differentiable
    x = _smooth_images(8)
    loss = distill_loss(student(x), model(x).detach(), temperature=2.0)
    loss.backward()
    grads = [p.grad for p in freq.fcmask_parameters(student)]
    assert grads and all(g is not None for g in grads)
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_distill_loss_is_zero_for_equal_logits_and_positive_otherwise():
    a = torch.randn(4, 5)
    assert float(distill_loss(a, a, 3.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(a, a + torch.randn(4, 5), 3.0)) > 0


def test_agreement_counts_matches():
    teacher = nn.Linear(4, 3)
    student = nn.Linear(4, 3)
    student.load_state_dict(teacher.state_dict())
    x = torch.randn(10, 4)
    assert top1_agreement(teacher, student, x, batch_size=3) == Agreement(10, 10)
    with torch.no_grad():
        student.bias.copy_(torch.tensor([100.0, 0.0, 0.0]))  # student always says class 0
    expected = int((teacher(x).argmax(1) == 0).sum())
    got = top1_agreement(teacher, student, x, batch_size=4)
    assert (got.matches, got.total) == (expected, 10)
    assert got.rate == pytest.approx(expected / 10)


def test_distill_meets_the_target_and_keeps_the_input_model(tmp_path):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, held = _smooth_images(32), _smooth_images(16, seed=1)
    res = distill_masks(model, train, _cfg(), held_out=held)
    assert res.macs.deployed_reduction >= 1.2
    assert res.trim is not None and res.trim.reached
    assert res.agreement is not None and res.agreement.total == 16
    # The student is what a build computes: every wrapped layer is a band that saves MACs.
    for p in res.macs.pointwise:
        if p.block_size is not None:
            assert p.macs.freq < p.macs.dense
    assert {lm.name for lm in res.masks.layers} == {n for n, _ in freq.freq_layers(res.student)}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_resume_continues_the_same_run(tmp_path):
    train = _smooth_images(32)
    full = distill_masks(_model(), train, _cfg())
    # Stop mid mask phase, then in the refine phase, then finish.
    for stop in (7, 8):
        with pytest.raises(DistillStopped, match=f"after {stop} steps"):
            distill_masks(_model(), train, _cfg(tmp_path, max_steps=stop))
    resumed = distill_masks(_model(), train, _cfg(tmp_path))
    assert resumed.masks == full.masks
    assert resumed.history == full.history
    a, b = full.student.state_dict(), resumed.student.state_dict()
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            assert torch.allclose(v, b[k], atol=1e-6), k


def test_a_checkpoint_from_other_settings_is_refused(tmp_path):
    train = _smooth_images(32)
    distill_masks(_model(), train, _cfg(tmp_path, mask_steps=2, refine_steps=0))
    with pytest.raises(ValueError, match="different configuration.*target_reduction"):
        distill_masks(_model(), train, _cfg(tmp_path, target_reduction=1.5))


def test_latency_weighting_distills_and_old_checkpoints_still_resume(tmp_path):
    train = _smooth_images(32)
    cfg = _cfg(weighting="latency", cost_model="llvm-skylake-avx512-c1")
    res = distill_masks(_model(), train, cfg)
    assert res.macs.deployed_reduction >= 1.2
    # A checkpoint written before weighting/cost_model existed resumes at their defaults
    # and is refused for other values.
    path = tmp_path / "distill.pt"
    distill_masks(_model(), train, _cfg(tmp_path, mask_steps=2, refine_steps=0))
    state = torch.load(path, weights_only=False)
    del state["config"]["weighting"], state["config"]["cost_model"]
    torch.save(state, path)
    distill_masks(_model(), train, _cfg(tmp_path, mask_steps=2, refine_steps=0))
    with pytest.raises(ValueError, match="different configuration.*weighting"):
        distill_masks(_model(), train, _cfg(tmp_path, mask_steps=2, refine_steps=0,
                                            weighting="mean"))  # fmt: skip


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"target_reduction": 0.9}, "target_reduction must be a number >= 1"),
        ({"target_reduction": True}, "target_reduction"),
        ({"batch_size": 0}, "batch_size"),
        ({"where": "middle"}, "where"),
        ({"temperature": 0}, "temperature"),
        ({"max_steps": 3}, "max_steps needs a checkpoint_dir"),
        ({"weighting": "latency"}, "needs cost_model"),
        ({"weighting": "latency", "cost_model": "no-such-target"}, "no cost model"),
        ({"cost_model": "llvm-skylake-avx512-c1"}, "latency' only"),
    ],
)
def test_bad_config_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


def test_model_that_does_not_return_logits_is_refused():
    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.pw = nn.Conv2d(3, 32, 1)

        def forward(self, x):
            return self.pw(x)  # a feature map, not logits

    with pytest.raises(ValueError, match="returns logits"):
        distill_masks(Features(), _smooth_images(16), _cfg())
    with pytest.raises(ValueError, match="returns logits"):
        check_logits((torch.zeros(1, 3),))


def test_too_few_images_are_refused():
    with pytest.raises(ValueError, match="fewer than one batch"):
        distill_masks(_model(), _smooth_images(4), _cfg())
    with pytest.raises(ValueError, match="no training images"):
        distill_masks(_model(), torch.zeros(0, 3, 16, 16), _cfg())


def test_distilled_model_compiles_to_what_pytorch_computes(tmp_path):
    """The exported student plus its mask file build into the same function, banded."""
    import numpy as np

    import tvm_freq
    from tvm_freq.freq.export import export

    train = _smooth_images(32)
    res = distill_masks(_model(), train, _cfg(target_reduction=1.5, mask_steps=16))
    assert res.masks.layers, "nothing was pruned"
    x = _smooth_images(1, seed=5)
    export(res.student, tmp_path / "m.json", onnx_path=tmp_path / "m.onnx", example_input=x)
    compiled = tvm_freq.build(str(tmp_path / "m.onnx"), masks=tmp_path / "m.json")
    assert any(d.rewritten for d in compiled.report.layers)
    with torch.no_grad():
        want = res.student(x).numpy()
    np.testing.assert_allclose(compiled(x.numpy()), want, rtol=1e-4, atol=1e-4)


def test_learn_masks_cli_writes_masks_and_model(tmp_path, capsys):
    import json

    from PIL import Image

    from tvm_freq.cli import main

    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((40, 30), Image.BILINEAR).save(photos / f"{i}.png")
    torch.save(_model(), tmp_path / "tiny.pt")
    out = tmp_path / "masks.json"
    args = [
        "learn-masks", str(tmp_path / "tiny.pt"), "--images", str(photos), "--size", "16",
        "--out", str(out), "--target-reduction", "1.2", "--views", "32", "--batch-size", "8",
        "--mask-steps", "12", "--refine-steps", "2", "--block-size", "4",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["deployed_mac_reduction"] >= 1.2
    assert summary["held_out_views"] == 10  # 1 of 6 photos held out, 10 views each
    assert out.exists() and out.with_suffix(".onnx").exists()
    # Bad input: an empty folder and a state dict instead of a model.
    (tmp_path / "empty").mkdir()
    assert main([*args[:3], str(tmp_path / "empty"), *args[4:]]) == 2
    assert "holds no images" in capsys.readouterr().err
    torch.save(_model().state_dict(), tmp_path / "sd.pt")
    assert main([args[0], str(tmp_path / "sd.pt"), *args[2:]]) == 2
    assert "state dict has no architecture" in capsys.readouterr().err


def test_energy_init_keeps_the_prefix_holding_that_energy():
    from tvm_freq.freq.mask_math import hard_counts
    from tvm_freq.freq.transforms import block_dct
    from tvm_freq.train.distill import _init_from_energy

    student = _model()
    x = _smooth_images(8)
    freq.apply_(student, freq.FreqConfig(block_size=4), example_input=x[:1])
    _init_from_energy(student, x, 0.95)
    layer = dict(freq.freq_layers(student))["pw1"]
    counts = hard_counts(layer.fcmask_in, 16)
    inp = torch.relu(student.stem(x))
    per = block_dct(inp, 4).pow(2).sum(dim=(0, 2, 3))
    share = per.cumsum(1) / per.sum(1, keepdim=True)
    for c in range(32):
        n = int(counts[c])
        assert share[c, n - 1] >= 0.95 - 1e-6  # the kept prefix holds the energy
        assert n == 1 or share[c, n - 2] < 0.95  # and is the shortest that does
    assert int(counts.max()) < 16  # smooth images: high frequencies are dropped


def test_learn_masks_cli_onnx_without_onnx2torch_says_what_to_install(
    tmp_path, monkeypatch, capsys
):
    import sys

    from tvm_freq.cli import main

    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # as if not installed
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(photos / f"{i}.png")
    args = ["learn-masks", str(model), "--images", str(photos), "--size", "16",
            "--out", str(tmp_path / "m.json")]  # fmt: skip
    assert main(args) == 2
    assert "pip install onnx2torch" in capsys.readouterr().err
    assert main([*args, "--target-reduction", "0.5"]) == 2
    assert "target_reduction must be a number >= 1" in capsys.readouterr().err
