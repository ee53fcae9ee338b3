"""What tests compile for when they run code: schedules made for AVX-512 (the shipped
records' target) still run, as the same loops, on a CPU without it."""

from __future__ import annotations

import tvm

from tvm_freq.target import host_target, missing_host_features


def runnable(target: tvm.target.Target) -> tvm.target.Target:
    """``target`` if this CPU can run its code, else the host target with its cores."""
    if not missing_host_features(target):
        return target
    return host_target(int(target.attrs.get("num-cores", 1)))
