"""Target selection: host targets and the vector width the schedules derive from them."""

from __future__ import annotations

import pytest
import tvm

from tvm_freq import target as T


@pytest.mark.parametrize(
    ("mcpu", "lanes"),
    [
        ("core-avx2", 8), ("haswell", 8), ("skylake", 8), ("znver3", 8), ("alderlake", 8),
        ("skylake-avx512", 16), ("cascadelake", 16), ("icelake-server", 16), ("znver4", 16),
        ("sapphirerapids", 16), ("x86-64", 4),
    ],
)  # fmt: skip
def test_vector_lanes_follow_the_isa(mcpu, lanes):
    assert T.vector_lanes(tvm.target.Target({"kind": "llvm", "mcpu": mcpu})) == lanes


def test_vector_lanes_read_mattr():
    assert T.vector_lanes(tvm.target.Target({"kind": "llvm", "mattr": ["+avx2"]})) == 8
    assert T.vector_lanes(tvm.target.Target({"kind": "llvm", "mattr": ["+avx512f"]})) == 16
    assert T.vector_lanes(tvm.target.Target({"kind": "llvm"})) == 4


@pytest.mark.parametrize(
    ("flags", "lanes"), [({"avx512f", "avx2"}, 16), ({"avx2"}, 8), ({"sse4_2"}, 4), (set(), 4)]
)
def test_every_host_target_gets_the_lanes_of_its_isa(monkeypatch, flags, lanes):
    """What the README promises: 16 floats with AVX-512, 8 with AVX2, 4 otherwise."""
    monkeypatch.setattr(T, "_cpu_flags", lambda: frozenset(flags))
    assert T.vector_lanes(T.host_target()) == lanes


_AVX2_HOST = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})


@pytest.mark.parametrize(
    ("mcpu", "flags", "missing"),
    [
        ("skylake-avx512", _AVX2_HOST, {"avx512f", "avx512bw", "avx512dq", "avx512vl"}),
        ("core-avx2", _AVX2_HOST, set()),
        ("core-avx2", frozenset({"sse4_2"}), {"avx", "avx2", "fma"}),
        ("skylake-avx512", frozenset(), set()),  # no /proc/cpuinfo: cannot tell
    ],
)  # fmt: skip
def test_missing_host_features(monkeypatch, mcpu, flags, missing):
    monkeypatch.setattr(T, "_cpu_flags", lambda: flags)
    found = set(T.missing_host_features(tvm.target.Target({"kind": "llvm", "mcpu": mcpu})))
    assert missing <= found and found <= missing | {"avx512cd", "f16c"}


def test_a_model_built_for_another_cpu_refuses_to_run(monkeypatch):
    """On an AVX2 CPU, code built for AVX-512 dies with SIGILL: running it raises instead,
    and the host's own build runs."""
    import numpy as np
    import torch

    import tvm_freq

    monkeypatch.setattr(T, "_cpu_flags", lambda: _AVX2_HOST)
    net = torch.nn.Conv2d(4, 8, 1).eval()
    x = np.ones((1, 4, 6, 6), "float32")
    foreign = tvm_freq.build(net, input_shape=x.shape, target="llvm -mcpu=skylake-avx512")
    with pytest.raises(RuntimeError, match="avx512f.*this CPU lacks"):
        foreign(x)
    with pytest.raises(RuntimeError, match="this CPU lacks"):
        foreign.benchmark()
    native = tvm_freq.build(net, input_shape=x.shape, target="llvm -mcpu=core-avx2")
    ref = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(native(x), ref, rtol=1e-5, atol=1e-5)
