"""CPU target selection: the host, single-thread by default, AVX-512 when the CPU has it."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import tvm
import tvm_ffi

__all__ = [
    "REFERENCE_MCPU",
    "host_cpu",
    "host_target",
    "missing_host_features",
    "resolve_target",
    "target_key",
    "vector_lanes",
]

# Shipped tuning records are tuned for this mcpu. LLVM's skylake-avx512 runs on every
# AVX-512 CPU (Intel since Skylake-SP, AMD since Zen 4), so it is the portable choice.
REFERENCE_MCPU = "skylake-avx512"


@functools.cache
def _cpuinfo() -> str:
    """``/proc/cpuinfo``, read once; ``""`` where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_flags() -> frozenset[str]:
    m = re.search(r"^flags\s*:\s*(.*)$", _cpuinfo(), re.MULTILINE)
    return frozenset(m.group(1).split()) if m else frozenset()


_VENDORS = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}


def host_cpu() -> str:
    """A short name of this machine's CPU model, such as ``amd-family26-model2``.

    Vendor, family and model from ``/proc/cpuinfo``: machines that share a target (every
    AVX-512 host builds for ``skylake-avx512``) differ in what each kernel costs, so a
    target's kernel cost model can be calibrated per CPU model
    (:func:`tvm_freq.cost_model.load_cost_model`).

    Returns
    -------
    str
        The name, or ``""`` where ``/proc/cpuinfo`` does not tell (not Linux, not x86).
    """
    fields = {}
    for key in ("vendor_id", "cpu family", "model"):
        m = re.search(rf"^{key}\s*:\s*(\S+)", _cpuinfo(), re.MULTILINE)
        if not m:
            return ""
        fields[key] = m.group(1)
    vendor_id = fields["vendor_id"]
    vendor = _VENDORS.get(vendor_id, re.sub(r"[^a-z0-9]", "", vendor_id.lower()))
    return f"{vendor}-family{fields['cpu family']}-model{fields['model']}"


def host_target(num_cores: int = 1) -> tvm.target.Target:
    """Return an LLVM target for this machine.

    Parameters
    ----------
    num_cores : int
        Threads the compiled model will use; MetaSchedule sizes its parallel loops to it.

    Returns
    -------
    tvm.target.Target
        ``skylake-avx512`` on AVX-512 hosts (the target shipped records are tuned for),
        ``core-avx2`` on AVX2 hosts, and LLVM's generic CPU otherwise.
    """
    flags = _cpu_flags()
    if "avx512f" in flags:
        mcpu = REFERENCE_MCPU
    elif "avx2" in flags:
        mcpu = "core-avx2"
    else:
        mcpu = None
    spec: dict[str, object] = {"kind": "llvm", "num-cores": int(num_cores)}
    if mcpu:
        spec["mcpu"] = mcpu
    return tvm.target.Target(spec)


def resolve_target(
    target: str | dict | tvm.target.Target | None, num_cores: int = 1
) -> tvm.target.Target:
    """Turn a user's target spec into a CPU ``Target``, with a clear error when it is bad.

    Parameters
    ----------
    target : str, dict, tvm.target.Target or None
        ``None`` or ``"host"`` for :func:`host_target`; otherwise anything
        ``tvm.target.Target`` accepts (e.g. ``"llvm -mcpu=skylake-avx512"``).
    num_cores : int
        Used when the spec does not set ``num-cores``.

    Returns
    -------
    tvm.target.Target
        The resolved target.
    """
    if target is None or target == "host":
        return host_target(num_cores)
    if isinstance(target, tvm.target.Target):
        tgt = target
    else:
        try:
            tgt = tvm.target.Target(_parse_spec(target) if isinstance(target, str) else target)
        except Exception as err:  # TVM raises several error types for a bad spec
            raise ValueError(
                f"unknown target {target!r}: {str(err).splitlines()[0]}. "
                "Use e.g. 'llvm -mcpu=skylake-avx512', a JSON dict, or None for the host CPU."
            ) from None
    if tgt.kind.name != "llvm":
        raise ValueError(f"tvm_freq compiles for the CPU (kind 'llvm'); got kind {tgt.kind.name!r}")
    mcpu = tgt.attrs.get("mcpu")
    triple = (
        str(tgt.attrs.get("mtriple", ""))
        or tvm_ffi.get_global_func("tvm.codegen.llvm.GetDefaultTargetTriple")()
    )
    if mcpu and not tvm_ffi.get_global_func("target.llvm_is_valid_cpu")(str(mcpu), triple):
        raise ValueError(f"unknown target: LLVM has no CPU named {str(mcpu)!r} for {triple}")
    if "num-cores" not in tgt.attrs:
        spec = dict(tgt.export())
        spec["num-cores"] = int(num_cores)
        tgt = tvm.target.Target(spec)
    return tgt


def _parse_spec(spec: str) -> dict | str:
    # TVM 0.27 dropped the "llvm -mcpu=x" string form; users still type it.
    spec = spec.strip()
    if spec.startswith("{"):
        return json.loads(spec)
    kind, *opts = spec.split()
    out: dict[str, object] = {"kind": kind}
    for opt in opts:
        key, sep, value = opt.lstrip("-").partition("=")
        if not sep:
            raise ValueError(f"target option {opt!r} is not of the form -key=value")
        out[key] = int(value) if value.isdigit() else value
    return out


def target_key(target: tvm.target.Target) -> str:
    """Return a file-name-safe key for a target: records are stored per key.

    Parameters
    ----------
    target : tvm.target.Target
        The target.

    Returns
    -------
    str
        E.g. ``"llvm-skylake-avx512-c1"``.
    """
    mcpu = str(target.attrs.get("mcpu", "generic")) or "generic"
    cores = int(target.attrs.get("num-cores", 1))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{target.kind.name}-{mcpu}-c{cores}")


def _has_feature(target: tvm.target.Target, feature: str) -> bool | None:
    """Whether LLVM says the target (its triple, mcpu and mattr) has ``feature``; None if
    LLVM cannot tell (no LLVM in this TVM build)."""
    try:
        from tvm.target import codegen

        return bool(codegen.llvm_cpu_has_features(feature, target))
    except Exception:  # noqa: BLE001 - a TVM without LLVM raises several error types
        return None


# x86 features whose instructions a target may emit, by their /proc/cpuinfo names (which
# are LLVM's too): code built for one of them dies with SIGILL on a CPU without it.
_X86_FEATURES = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx2", "fma",
                 "avx", "f16c")  # fmt: skip


def missing_host_features(target: tvm.target.Target) -> tuple[str, ...]:
    """The instruction-set features ``target`` uses that this machine's CPU lacks.

    Code compiled for such a target (say ``skylake-avx512`` on an AVX2-only CPU) kills
    the process with an illegal instruction when it runs, so runs check this first.

    Parameters
    ----------
    target : tvm.target.Target
        An ``llvm`` target.

    Returns
    -------
    tuple of str
        Missing features, e.g. ``("avx512f", "avx512bw", ...)``; empty when the host can
        run the code or cannot tell (no ``/proc/cpuinfo``, or LLVM cannot be asked).
    """
    flags = _cpu_flags()
    if not flags:
        return ()
    return tuple(f for f in _X86_FEATURES if f not in flags and _has_feature(target, f))


def vector_lanes(target: tvm.target.Target) -> int:
    """Float32 lanes of the widest vector unit of a CPU target.

    The features are LLVM's for the target's ``mtriple``, ``mcpu`` and ``mattr``, so every
    CPU name LLVM knows (``core-avx2``, ``znver4``, ``x86-64-v4``, ...) gets the width of
    its ISA; a few well-known names are the fallback when LLVM cannot be asked.

    Parameters
    ----------
    target : tvm.target.Target
        An ``llvm`` target.

    Returns
    -------
    int
        16 with AVX-512, 8 with AVX2, 4 otherwise.
    """
    avx512, avx2 = _has_feature(target, "avx512f"), _has_feature(target, "avx2")
    if avx512 is None or avx2 is None:
        keys = {str(f) for f in (target.attrs.get("mattr") or [])}
        mcpu = str(target.attrs.get("mcpu", ""))
        avx512 = "+avx512f" in keys or "avx512" in mcpu or mcpu in _AVX512_CPUS
        avx2 = avx512 or "+avx2" in keys or mcpu in _AVX2_CPUS
    if avx512:
        return 16
    if avx2:
        return 8
    return 4


_AVX512_CPUS = frozenset({"znver4", "znver5", "sapphirerapids", "cascadelake", "icelake-server",
                          "cooperlake", "x86-64-v4"})  # fmt: skip
_AVX2_CPUS = frozenset({"core-avx2", "haswell", "broadwell", "skylake", "znver1", "znver2",
                        "znver3", "x86-64-v3", "alderlake"})  # fmt: skip
