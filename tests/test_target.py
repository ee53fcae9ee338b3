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
