"""How :func:`tvm_freq.tuning.tune` splits its work into MetaSchedule calls (no tuning)."""

from __future__ import annotations

from torch import nn
from tvm.s_tir import meta_schedule as ms
from tvm_freq.schedules import conv2d

from tvm_freq.frontend import import_model
from tvm_freq.pipeline import lower
from tvm_freq.target import REFERENCE_MCPU, host_target, resolve_target
from tvm_freq.tuning import TASKS_PER_RUN, TRIALS_PER_POINT, tuning_runs


def _tasks():
    layers: list[nn.Module] = []
    for cin, cout in ((8, 16), (16, 24), (24, 32), (32, 40), (40, 48)):
        layers += [nn.Conv2d(cin, cout, 1), nn.ReLU()]
    layers += [nn.Conv2d(48, 48, 3, padding=1, groups=48), nn.Flatten()]
    mod = import_model(nn.Sequential(*layers).eval(), input_shape=(1, 8, 8, 8)).mod
    # The shipped records' target, whatever this host is: nothing here runs code.
    target = resolve_target({"kind": "llvm", "mcpu": REFERENCE_MCPU})
    return ms.relax_integration.extract_tasks(lower(mod, target), target), target


def test_runs_cover_every_task_once_in_small_calls_with_capped_trials():
    tasks, target = _tasks()
    kinds = {t.task_name: conv2d.conv_kind(t.dispatched[0]["main"]) for t in tasks}
    assert sorted(k.value for k in kinds.values()) == ["depthwise", "elementwise"] + [
        "pointwise"
    ] * 5
    runs = tuning_runs(tasks, target, per_task=64)
    names = [t.task_name for run in runs for t in run.tasks]
    assert sorted(names) == sorted(kinds)
    assert all(0 < len(run.tasks) <= TASKS_PER_RUN for run in runs)
    knobs = conv2d.knobs_for(target)
    for run in runs:
        assert run.strategy == "replay-func"
        for t in run.tasks:
            points = conv2d.design_space_size(t.dispatched[0]["main"], knobs)
            assert run.cap == min(64, TRIALS_PER_POINT * points)
    caps = {kinds[t.task_name]: run.cap for run in runs for t in run.tasks}
    assert caps[conv2d.ConvKind.ELEMENTWISE] == TRIALS_PER_POINT  # one point: no decision
    assert caps[conv2d.ConvKind.DEPTHWISE] == TRIALS_PER_POINT * (
        1 + len(conv2d.SAMPLED_DEPTHWISE_ROWS)
    )
    assert caps[conv2d.ConvKind.POINTWISE] == 64
    # A small budget per task caps every run.
    assert {run.cap for run in tuning_runs(tasks, target, per_task=2)} == {2}


def test_tasks_without_a_default_schedule_use_metaschedules_space():
    mod = import_model(
        nn.Sequential(nn.Conv2d(8, 8, 1), nn.Softmax(dim=1)).eval(), input_shape=(1, 8, 4, 4)
    ).mod
    # The shipped records' target, whatever this host is: nothing here runs code.
    target = resolve_target({"kind": "llvm", "mcpu": REFERENCE_MCPU})
    tasks = ms.relax_integration.extract_tasks(lower(mod, target), target)
    runs = tuning_runs(tasks, target, per_task=8)
    plain = [r for r in runs if r.strategy == "evolutionary"]
    assert plain and all(r.space == "post-order-apply" and r.cap == 8 for r in plain)
    for r in plain:
        assert all(conv2d.conv_kind(t.dispatched[0]["main"]) is None for t in r.tasks)


def test_candidates_build_without_the_tensor_intrinsics_and_run():
    import numpy as np
    import tvm
    from tvm import te

    from tvm_freq.tuning import build_candidate

    a = te.placeholder((64,), name="a")
    b = te.compute((64,), lambda i: a[i] * 2.0 + 1.0, name="b")
    lib = build_candidate(tvm.IRModule({"main": te.create_prim_func([a, b])}), host_target())
    x = np.arange(64, dtype="float32")
    out = tvm.runtime.tensor(np.zeros(64, dtype="float32"))
    lib["main"](tvm.runtime.tensor(x), out)
    np.testing.assert_allclose(out.numpy(), x * 2 + 1)


def test_tensor_intrinsics_load_fast_and_whole():
    """The fast import registers what MetaSchedule's own import does (spot checks: the
    x86 int8 dot products its rules name) and restores ``inspect.stack``."""
    import inspect

    from tvm.s_tir._tensor_intrin import TensorIntrin

    from tvm_freq.tuning import load_tensor_intrinsics

    stack = inspect.stack
    load_tensor_intrinsics()
    assert inspect.stack is stack
    for name in ("dot_16x4_vnni", "dot_16x4_avx512"):
        assert TensorIntrin.get(name, allow_missing=True) is not None, name
