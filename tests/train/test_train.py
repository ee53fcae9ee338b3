"""Tests for tvm_freq.train: phases, a tiny run, and checkpoint / resume."""

import copy
import json
from dataclasses import replace

import pytest
import torch

from tvm_freq.masks import load_masks
from tvm_freq.train import Phase, TrainConfig, build_phases, evaluate, run_training
from tvm_freq.train.optim import Distill, distill_loss, train_step


def _cfg(data_dir, out_dir, **kw):
    base = dict(
        width=0.25,
        data_dir=data_dir,
        batch_size=16,
        eval_batch_size=16,
        epochs=1,
        mask_epochs=1,
        refine_epochs=1,
        target_reduction=None,
        lam=0.5,
        lam_growth=4.0,
        out_dir=str(out_dir),
        checkpoint_every=2,
        progress=False,
        num_threads=1,
    )
    return TrainConfig(**(base | kw))


def test_build_phases():
    cfg = TrainConfig(epochs=2, mask_epochs=3, refine_epochs=1, bn_epochs=1)
    assert build_phases(cfg) == [
        Phase("train", 2),
        Phase("masks", 3),
        Phase("refine", 1),
        Phase("bn", 1),
    ]
    alt = build_phases(TrainConfig(schedule="alternate", alt_cycles=2, refine_epochs=0))
    assert [p.kind for p in alt] == ["train", "masks", "weights", "masks", "weights"]
    assert build_phases(TrainConfig(schedule="none", epochs=4)) == [Phase("train", 4)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "vgg"}, "unknown model"),
        ({"schedule": "random"}, "schedule"),
        ({"block_size": 9}, "block size"),
        ({"where": "middle"}, "where"),
        ({"epochs": -1}, "epochs"),
        ({"train_limit": 0}, "train_limit"),
        ({"lam": -1.0}, "lam"),
        ({"target_reduction": 0.0}, "target_reduction"),
        ({"epochs": 0}, "untrained"),
        ({"weighting": "sum"}, "weighting"),
        ({"weighting": "latency"}, "needs cost_model"),
        ({"weighting": "latency", "cost_model": "/no/such/cost_model.json"}, "no cost model"),
        ({"cost_model": "llvm-skylake-avx512-c1"}, "latency' only"),
        ({"self_distill": 1.5}, "self_distill"),
        ({"self_distill": -0.1}, "self_distill"),
        ({"distill_temperature": 0.0}, "distill_temperature"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_latency_weighted_run_learns_masks(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, weighting="latency", cost_model="llvm-skylake-avx512-c1")
    r = run_training(cfg)
    assert not r["interrupted"] and r["global_step"] == 9
    assert r["phases"][1]["kind"] == "masks"
    assert r["macs"]["pointwise_reduction"] > 0


def test_tiny_run_resumes_without_losing_steps(data_dir, tmp_path):
    ref = run_training(_cfg(data_dir, tmp_path / "ref"))
    assert not ref["interrupted"] and ref["global_step"] == 9  # 3 phases x 3 steps
    # Interrupt in the mask phase, then in the refinement phase, then finish.
    first = run_training(_cfg(data_dir, tmp_path / "cut", max_steps=4))
    assert first["interrupted"] and first["global_step"] == 4
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert ckpt["state"]["global_step"] == 4 and ckpt["state"]["phase"] == 1
    assert ckpt["state"]["step"] == 1 and ckpt["optimizer"] is not None
    second = run_training(_cfg(data_dir, tmp_path / "cut", max_steps=8))
    assert second["interrupted"] and second["global_step"] == 8
    done = run_training(_cfg(data_dir, tmp_path / "cut"))
    assert not done["interrupted"] and done["global_step"] == ref["global_step"]
    # Same steps, same data, same RNG: the resumed run ends where the uninterrupted one does.
    a = torch.load(tmp_path / "ref" / "fcmask.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "fcmask.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    assert load_masks(done["mask_file"]) == load_masks(ref["mask_file"])
    for key in ("accuracy_unpruned", "accuracy_pruned_before_refine", "accuracy_pruned"):
        assert done[key] == pytest.approx(ref[key])
    assert done["macs"] == pytest.approx(ref["macs"])

    # The report has what the benchmark needs.
    mf = load_masks(ref["mask_file"])
    assert mf.num_pointwise == 34 and len(mf.layers) == 34
    m = ref["macs"]
    assert m["pointwise_reduction"] == pytest.approx(
        m["pointwise_macs_dense"] / m["pointwise_macs_pruned"]
    )
    assert m["network_macs_dense"] > m["pointwise_macs_dense"]
    assert 0 <= ref["accuracy_pruned"] <= 100
    assert ref["accuracy_drop"] == pytest.approx(ref["accuracy_unpruned"] - ref["accuracy_pruned"])
    assert json.loads((tmp_path / "ref" / "report.json").read_text())["global_step"] == 9
    # lambda grew and the penalty pushed masks down: fewer MACs than the unpruned wrap.
    assert m["pointwise_macs_pruned"] < m["pointwise_macs_unpruned_freq"]
    # A changed configuration does not silently resume.
    with pytest.raises(ValueError, match="lam"):
        run_training(_cfg(data_dir, tmp_path / "cut", lam=0.25))


def test_self_distillation_keeps_a_teacher_and_resumes_exactly(data_dir, tmp_path):
    losses: dict[str, list[float]] = {"plain": [], "ref": [], "cut": []}

    def record(key):
        return lambda info: losses[key].append(info["loss"])

    run_training(_cfg(data_dir, tmp_path / "plain"), record("plain"))
    ref = run_training(_cfg(data_dir, tmp_path / "ref", self_distill=0.7), record("ref"))
    assert not ref["interrupted"] and ref["global_step"] == 9
    # The training phase is the same; afterwards the KL term changes the updates.
    assert losses["ref"][:3] == pytest.approx(losses["plain"][:3])
    assert losses["ref"][4:] != pytest.approx(losses["plain"][4:])

    # Cut in the mask phase: the checkpoint holds the teacher, which is the model at the
    # end of the training phase, not a copy of the student.
    cut = _cfg(data_dir, tmp_path / "cut", self_distill=0.7, max_steps=5)
    first = run_training(cut, record("cut"))
    assert first["interrupted"]
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    teacher, student = ckpt["teacher"], ckpt["model"]
    assert teacher is not None and not any("fcmask" in k for k in teacher)
    moved = [k for k in teacher if k in student and not torch.equal(teacher[k], student[k])]
    assert moved  # the student trained on; the teacher stayed
    done = run_training(_cfg(data_dir, tmp_path / "cut", self_distill=0.7), record("cut"))
    assert not done["interrupted"]
    # Resumed with the stored teacher: the same losses and weights as one run.
    torch.testing.assert_close(losses["cut"], losses["ref"], rtol=1e-5, atol=1e-6)
    a = torch.load(tmp_path / "ref" / "fcmask.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "fcmask.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    # Another alpha does not silently resume the finished run.
    with pytest.raises(ValueError, match="self_distill"):
        run_training(_cfg(data_dir, tmp_path / "cut", self_distill=0.3))


def test_train_step_mixes_cross_entropy_and_kl():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))

    def grads(distill):
        opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the weights stay
        info = train_step(net, opt, x, y, len(y), 0.0, distill=distill)
        return info, [p.grad.clone() for p in net.parameters()]

    plain_info, plain = grads(None)
    # alpha 0: cross-entropy alone; the reported loss is the cross-entropy either way.
    info0, g0 = grads(Distill(copy.deepcopy(net), 0.0, 2.0))
    assert info0["loss"] == pytest.approx(plain_info["loss"])
    for a, b in zip(g0, plain, strict=True):
        torch.testing.assert_close(a, b)
    # alpha 1 against an identical teacher: the KL is at its minimum, no gradient.
    _, g1 = grads(Distill(copy.deepcopy(net), 1.0, 2.0))
    for g in g1:
        torch.testing.assert_close(g, torch.zeros_like(g), atol=1e-7, rtol=0)
    # alpha 1 against another teacher: the gradient of T^2 KL, as autograd gives it.
    other = torch.nn.Linear(4, 3)
    _, g2 = grads(Distill(other, 1.0, 3.0))
    net.zero_grad()
    distill_loss(net(x), other(x).detach(), 3.0).backward()
    for a, p in zip(g2, net.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


def test_mask_learning_stops_at_target(data_dir, tmp_path):
    cfg = _cfg(
        data_dir,
        tmp_path / "alt",
        schedule="alternate",
        alt_cycles=2,
        refine_epochs=0,
        target_reduction=0.5,  # below the unpruned wrap: reached at the first mask step
    )
    r = run_training(cfg)
    kinds = [(p["kind"], p["skipped"], p["global_step"]) for p in r["phases"]]
    assert kinds == [
        ("train", False, 3),
        ("masks", False, 4),
        ("weights", False, 7),
        ("masks", True, 7),
        ("weights", False, 10),
    ]
    assert r["global_step"] == 10 and "accuracy_pruned" in r
    # Interrupted on the very step that reached the target: resuming changes nothing.
    cut = run_training(replace(cfg, out_dir=str(tmp_path / "cut"), max_steps=4))
    assert cut["interrupted"] and cut["global_step"] == 4
    resumed = run_training(replace(cfg, out_dir=str(tmp_path / "cut")))
    assert resumed["phases"] == r["phases"]
    assert resumed["accuracy_pruned"] == pytest.approx(r["accuracy_pruned"])


def test_evaluate_restores_training_flag(data_dir):
    from tvm_freq.data import load_dataset
    from tvm_freq.models import get_model

    ds = load_dataset("fashion-mnist", "test", data_dir, limit=8)
    model = get_model("mobilenetv2-cifar", width_mult=0.25).train()
    acc = evaluate(model, ds, batch_size=3)
    assert model.training and acc in {100.0 * i / 8 for i in range(9)}


def test_lambda_controller_reaches_target(data_dir, tmp_path):
    cfg = _cfg(
        data_dir,
        tmp_path / "ctl",
        mask_epochs=5,
        refine_epochs=1,
        lam=0.05,
        lam_adapt=1.5,
        target_reduction=1.05,
        # The plan reaches the target halfway, so the controller gets there with steps
        # to spare (at 0.75 it reached it on the last of the 15 mask steps).
        target_at=0.5,
    )
    r = run_training(cfg)
    masks = r["phases"][1]
    assert masks["kind"] == "masks" and masks["global_step"] < 3 + 15  # stopped early
    assert r["macs"]["pointwise_reduction"] >= 1.05
    # Trimming hands back what the last mask step overshot, never below the target.
    assert 1.05 <= r["trim"]["reduction"] <= r["trim"]["reduction_before"]
    # Refinement trains weights only: the MACs fixed at squash are the final ones.
    assert r["macs_at_squash"]["pointwise_reduction"] == pytest.approx(
        r["macs"]["pointwise_reduction"]
    )
    # Behind the plan at first, so lambda was raised above its start.
    assert masks["lam"] > 0.05


def test_trim_to_target_lands_on_target(data_dir, tmp_path):
    # lambda 0: mask learning never reaches the target, so trimming must take
    # coefficients away; the reduction then sits just above the target.
    cfg = _cfg(data_dir, tmp_path / "trim", lam=0.0, lam_adapt=1.0, target_reduction=1.3)
    r = run_training(cfg)
    trim = r["trim"]
    assert trim["reduction_before"] < 1.3 <= trim["reduction"] < 1.3 * 1.05
    assert trim["offset"] < 0
    assert r["macs"]["pointwise_reduction"] == pytest.approx(trim["reduction"])
    # Without trimming the target is simply missed.
    off = run_training(replace(cfg, out_dir=str(tmp_path / "off"), trim_to_target=False))
    assert "trim" not in off and off["macs"]["pointwise_reduction"] < 1.3
