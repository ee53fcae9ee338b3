"""Compiled models: export_library / load round trip, benchmark statistics, CLI."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.models import export_onnx


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 4, 1),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def compiled():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        return tvm_freq.build(_net(), input_shape=(1, 3, 8, 8), tuning=Tuning(use_shipped=False))


def test_export_and_load_round_trip(compiled, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    path = compiled.export_library(tmp_path / "m.so")
    loaded = tvm_freq.load(path)
    np.testing.assert_allclose(loaded(x), compiled(x), rtol=1e-6, atol=1e-6)
    assert loaded.input_shapes == ((1, 3, 8, 8),)
    with torch.no_grad():
        ref = _net()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(loaded(x), ref, rtol=1e-4, atol=1e-5)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        tvm_freq.load(tmp_path / "missing.so")


def test_benchmark_statistics(compiled):
    res = compiled.benchmark(repeat=3, number=2)
    assert res.repeat == 3 and res.number == 2
    assert 0 < res.min_ms <= res.median_ms <= res.max_ms


def test_cli_compile_then_run(tmp_path):
    onnx_path = export_onnx(_net(), tmp_path / "net.onnx", (1, 3, 8, 8))
    lib = tmp_path / "net.so"
    env_py = [sys.executable, "-m", "tvm_freq.cli"]
    out = subprocess.run([*env_py, "compile", str(onnx_path), "-o", str(lib), "--no-shipped"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert lib.exists()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([*env_py, "run", str(lib), "--input", str(tmp_path / "x.npy"),
                          "--output", str(tmp_path / "y.npy")],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with torch.no_grad():
        ref = _net()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-4, atol=1e-5)


def test_cli_reports_bad_input_cleanly(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tvm_freq.cli", "compile",
                          str(tmp_path / "nope.onnx")], capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0
    assert "neither a file nor a zoo model" in out.stderr


def test_profile_times_every_kernel_and_leaves_the_model_unchanged(compiled):
    x = np.random.default_rng(1).standard_normal(compiled.input_shapes[0]).astype("float32")
    before = compiled(x)
    prof = compiled.profile(x, repeat=2)
    assert prof and all(p.median_us > 0 for p in prof)
    assert not any(p.kernel.startswith("vm.builtin") for p in prof)  # kernels only
    np.testing.assert_array_equal(compiled(x), before)  # the VM is usable as before


def test_load_rebuilds_the_build_report(compiled, tmp_path):
    from tvm_freq.report import BuildReport

    loaded = tvm_freq.load(compiled.export_library(tmp_path / "r.so"))
    assert isinstance(loaded.report, BuildReport)
    assert loaded.report == compiled.report


def _pool_script(body: str, env_threads: str | None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    if env_threads is not None:
        env["TVM_NUM_THREADS"] = env_threads
    return subprocess.run([sys.executable, "-W", "always", "-c", body], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_thread_pool_grows_after_a_single_thread_run():
    # TVM sizes its pool once, on first use; tvm_freq starts it with every CPU so that a
    # 1-thread model run first does not cap a 2-thread one after it.
    body = (
        "import os, tvm_ffi\n"
        "from tvm_freq.runtime import set_num_threads\n"
        "n = len(os.sched_getaffinity(0))\n"
        "set_num_threads(1)\n"
        "set_num_threads(n)\n"
        "print(n, tvm_ffi.get_global_func('runtime.NumThreads')())\n"
    )
    out = _pool_script(body, env_threads=None)
    assert out.returncode == 0, out.stderr
    cpus, running = out.stdout.split()
    assert running == cpus
    assert "RuntimeWarning" not in out.stderr


def test_thread_pool_too_small_warns():
    body = "from tvm_freq.runtime import set_num_threads\nset_num_threads(1)\nset_num_threads(2)\n"
    out = _pool_script(body, env_threads="1")
    assert out.returncode == 0, out.stderr
    assert "thread pool runs 1 thread(s), not 2" in out.stderr
