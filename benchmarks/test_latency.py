"""pytest-benchmark suite (not part of the tests): ``pytest benchmarks/ --benchmark-only``.

Each zoo model is timed in tvm_freq (with whatever records exist), ONNX Runtime and
PyTorch, single-thread, batch 1. Compare runs with ``--benchmark-compare``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("TVM_NUM_THREADS", "1")

from tvm_freq import Tuning, UntunedWarning, build  # noqa: E402
from tvm_freq.models import MODEL_NAMES, bundled_onnx, get_model  # noqa: E402


@pytest.fixture(scope="module", params=MODEL_NAMES)
def zoo(request):
    name = request.param
    path = bundled_onnx(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        model = build(str(path), tuning=Tuning())
    x = np.random.default_rng(0).standard_normal(model.input_shapes[0]).astype("float32")
    return name, path, model, x


def test_tvm_freq(benchmark, zoo):
    _, _, model, x = zoo
    benchmark(model, x)


def test_onnxruntime(benchmark, zoo):
    import onnxruntime as ort

    _, path, _, x = zoo
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    benchmark(sess.run, None, {"input": x})


def test_pytorch(benchmark, zoo):
    import torch

    name, _, _, x = zoo
    torch.set_num_threads(1)
    net = get_model(name)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        benchmark(net, xt)
