"""ScalarClipToClip: ONNX Clip with constant bounds becomes one R.clip."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.frontend import import_model
from tvm_freq.passes.scalar_clip import ScalarClipToClip


def _clip_model(lo: float | None, hi: float | None, bounds_as_inputs: bool = False):
    """Conv 1x1 (with bias) -> Clip(lo, hi) on a 1x8x6x6 input; None leaves a bound out."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype("float32"), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype("float32"), "b")]  # fmt: skip
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])]
    names = []
    for name, v in (("lo", lo), ("hi", hi)):
        if v is None:
            names.append("")
        elif bounds_as_inputs:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
            names.append(name)
        else:
            inits.append(numpy_helper.from_array(np.array(v, dtype="float32"), name))
            names.append(name)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1]),
             helper.make_node("Clip", ["y", *names], ["z"])]  # fmt: skip
    out = [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 6, 6])]
    graph = helper.make_graph(nodes, "clip", inputs, out, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _calls(mod) -> list[str]:
    """Names of the ops and call_tir'd PrimFuncs in ``main``, in order."""
    out = []

    def visit(e):
        if isinstance(e, relax.Call):
            op = e.op.name if hasattr(e.op, "name") else str(e.op)
            out.append(e.args[0].name_hint if op == "relax.call_tir" else op)

    relax.analysis.post_order_visit(mod["main"], visit)
    return out


def test_constant_clip_imports_as_one_clip_op():
    mod = import_model(_clip_model(0.0, 6.0)).mod
    calls = _calls(mod)
    assert "relax.clip" in calls
    assert not any(c.startswith(("maximum", "minimum")) for c in calls)
    # The importer's maximum/minimum PrimFuncs are dropped with their calls.
    assert not any(gv.name_hint.startswith(("maximum", "minimum")) for gv in mod.functions)


def test_pass_is_idempotent_and_leaves_its_input_alone():
    from tvm.relax.frontend.onnx import from_onnx

    raw = relax.transform.FoldConstant()(from_onnx(_clip_model(0.0, 6.0)))
    before = raw.script()
    once = ScalarClipToClip()(raw)
    assert raw.script() == before  # the given module is unchanged
    assert ScalarClipToClip()(once).script() == once.script()
    assert "R.clip" in once.script()


@pytest.mark.parametrize(
    ("lo", "hi", "as_inputs"),
    [
        (0.0, None, False),  # only a lower bound: one maximum, not a clip pair
        (None, 6.0, False),  # only an upper bound
        (6.0, 0.0, False),  # lo > hi: ONNX's answer is not R.clip's
        (0.0, 6.0, True),  # bounds given at run time, not constants
    ],
)  # fmt: skip
def test_other_clips_are_left_as_imported(lo, hi, as_inputs):
    calls = _calls(import_model(_clip_model(lo, hi, as_inputs)).mod)
    assert "relax.clip" not in calls
    assert any(c.startswith(("maximum", "minimum")) for c in calls)


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 6.0), (-1.5, 0.25), (6.0, 0.0), (0.0, None)])
def test_compiled_clip_equals_onnxruntime(lo, hi):
    model = _clip_model(lo, hi)
    x = np.random.default_rng(1).standard_normal((1, 8, 6, 6)).astype("float32") * 4
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        built = tvm_freq.build(model, tuning=Tuning(use_shipped=False))
    np.testing.assert_allclose(built(x), ref, rtol=1e-5, atol=1e-5)
    onnx.checker.check_model(model)
