"""tvm_freq.build on the zoo models: equal to ONNX Runtime (ONNX path) and PyTorch (torch path)."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.models import default_input_shape, export_onnx, get_model

ZOO = ["mobilenetv2-cifar", "resnext29-32x4d"]


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _input(shape) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(shape).astype("float32")


@pytest.mark.parametrize("name", ZOO)
def test_onnx_path_matches_onnxruntime(name, tmp_path):
    shape = default_input_shape(name)
    path = export_onnx(get_model(name), tmp_path / f"{name}.onnx", shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        model = tvm_freq.build(str(path), tuning=Tuning(use_shipped=False))
    x = _input(shape)
    ref = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    out = model(x)
    assert out.shape == ref.shape
    assert _rel_err(out, ref) < 1e-4


@pytest.mark.parametrize("name", ZOO)
def test_torch_path_matches_pytorch(name):
    net = get_model(name)
    x = torch.from_numpy(_input(default_input_shape(name)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        model = tvm_freq.build(net, example_inputs=x, tuning=Tuning(use_shipped=False))
    with torch.no_grad():
        ref = net(x).numpy()
    out = model(x)  # a torch tensor goes in, NumPy comes out
    assert isinstance(out, np.ndarray)
    assert _rel_err(out, ref) < 1e-4


def test_untuned_build_warns_with_how_to_tune():
    # A grouped conv: no default schedule fits it, so it runs as plain loops.
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1, groups=2), torch.nn.ReLU()).eval()
    with pytest.warns(UntunedWarning, match="Tuning\\(trials=N\\)"):
        model = tvm_freq.build(net, input_shape=(1, 4, 8, 8), tuning=Tuning(use_shipped=False))
    assert model.report.untuned_tasks
    assert model.report.tasks_tuned == 0
