"""Bad input gets a clear error, never a crash or a wrong answer."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.frontend import ModelImportError, UnsupportedOpError
from tvm_freq.target import resolve_target


@pytest.fixture(scope="module")
def small_model():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        return tvm_freq.build(net, input_shape=(1, 3, 4, 4), tuning=Tuning(use_shipped=False))


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        tvm_freq.build(str(tmp_path / "nope.onnx"))


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 this is not protobuf \xff" * 10)
    with pytest.raises(ModelImportError, match="bad.onnx"):
        tvm_freq.build(str(bad))


def test_unsupported_onnx_ops_are_named(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"]), helper.make_node("FancyOp", ["t"], ["y"])],
        "g", [x], [y],
    )  # fmt: skip
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(UnsupportedOpError, match="FancyOp") as info:
        tvm_freq.build(str(path))
    assert info.value.ops == ["FancyOp"]


def test_dynamic_onnx_input_needs_shape(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ModelImportError, match="input_shape"):
        tvm_freq.build(str(path))


def test_wrong_input_shape_at_run_time(small_model):
    with pytest.raises(ValueError, match=r"expected shape \(1, 3, 4, 4\)"):
        small_model(np.zeros((1, 3, 5, 4), "float32"))


def test_wrong_input_dtype_at_run_time(small_model):
    with pytest.raises(TypeError, match="expected dtype float32"):
        small_model(np.zeros((1, 3, 4, 4), "float64"))


def test_wrong_number_of_inputs(small_model):
    x = np.zeros((1, 3, 4, 4), "float32")
    with pytest.raises(ValueError, match="takes 1 input"):
        small_model(x, x)


@pytest.mark.parametrize(
    "spec, match",
    [("llvm -mcpu=notacpu", "no CPU named 'notacpu'"), ("cuda", "CPU"), ("llvm -x", "-key=value"),
     ("definitely-not-a-target", "unknown target")],
)  # fmt: skip
def test_unknown_target(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_target(spec)


def test_bad_model_type():
    with pytest.raises(TypeError, match="cannot import"):
        tvm_freq.build(42)
