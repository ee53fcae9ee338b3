"""Default schedules of the kernels around the convs: reductions (and what they refuse)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from tvm_freq.schedules.conv2d import ConvKind, conv_kind

import tvm_freq
from tvm_freq import Tuning
from tvm_freq.frontend import import_model
from tvm_freq.pipeline import lower
from tvm_freq.target import host_target


def _kinds(net: torch.nn.Module, shape) -> list[ConvKind | None]:
    mod = lower(import_model(net.eval(), input_shape=shape).mod, host_target())
    return [conv_kind(f) for gv, f in mod.functions.items()
            if hasattr(f, "params") and gv.name_hint != "main"]  # fmt: skip


class _PoolHead(torch.nn.Module):
    """A global average pool (a sum and a divide), a global max pool and a 2x2 max pool."""

    def forward(self, x):
        f = torch.nn.functional
        glob = f.adaptive_avg_pool2d(x, 1) * 2.0 + f.max_pool2d(x, tuple(x.shape[2:]))
        return glob + f.max_pool2d(x, 2).sum() + f.avg_pool2d(x, 2).sum()


class _Softmax(torch.nn.Module):
    def forward(self, x):
        return torch.softmax(x, dim=-1)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 20, 7, 7), (2, 3, 6, 10)])
def test_reduction_default_schedule_equals_pytorch(shape, threads):
    x = torch.randn(*shape)
    assert ConvKind.REDUCTION in _kinds(_PoolHead(), shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tvm_freq.build(_PoolHead(), example_inputs=x, threads=threads,
                               tuning=Tuning(use_shipped=False))  # fmt: skip
    assert not model.report.untuned_tasks  # no kernel left as plain loops
    np.testing.assert_allclose(model(x), _PoolHead()(x).numpy(), rtol=1e-5, atol=1e-5)


def test_reduction_schedule_is_parallel_with_threads():
    import tvm
    from tvm import s_tir
    from tvm_freq.schedules.conv2d import knobs_for
    from tvm_freq.schedules.generic import schedule_reduction

    mod = lower(import_model(torch.nn.AdaptiveAvgPool2d(1).eval(), input_shape=(1, 8, 7, 7)).mod,
                host_target())  # fmt: skip
    func = next(f for gv, f in mod.functions.items() if gv.name_hint.startswith("mean"))
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    schedule_reduction(sch, knobs_for(tvm.target.Target({"kind": "llvm", "num-cores": 2})))
    assert "T.parallel" in sch.mod["main"].script()


@pytest.mark.parametrize(
    ("net", "shape"),
    [(_Softmax(), (1, 4, 10)),  # two reductions (max, sum): not one
     (torch.nn.Conv2d(4, 8, 3), (1, 4, 8, 8))],  # a conv has its own schedule
)  # fmt: skip
def test_reduction_does_not_match(net, shape):
    assert ConvKind.REDUCTION not in _kinds(net, shape)
