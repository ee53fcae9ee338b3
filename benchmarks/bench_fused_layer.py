"""Time single fused frequency kernels of MobileNetV2-224 layers, knob against knob.

Builds the fused kernel (``tvm_freq.kernels.freq_pointwise.fused_pointwise``) of chosen
pointwise layers with a bundled mask set and random weights, schedules it with the
default knobs for the target and with each ``--variant`` (GEMM ``rows:col_vectors``),
and times them in interleaved rounds (minimum of each round's repeats, median over
rounds), one thread unless ``--threads``::

    TVM_NUM_THREADS=1 python benchmarks/bench_fused_layer.py --layers 3 22 27 \\
        --variant 12:2 --variant 8:3 --variant 6:4

``--baseline REV`` also builds the kernel and schedule as they were at git revision REV
(read with ``git show``, imported beside today's) and times both in the same interleaved
rounds, after checking that they give the same answer::

    TVM_NUM_THREADS=1 python benchmarks/bench_fused_layer.py --layers $(seq 0 33) \\
        --baseline ab2a84a --json fused.json

For kernel-level studies; the whole-network numbers come from ``tvm-freq bench``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import tvm
from transform_macs import pointwise_inputs
from tvm import s_tir
from tvm_freq.kernels import freq_pointwise as K
from tvm_freq.schedules import freq_pointwise as S

from tvm_freq.band_plan import kernel_macs
from tvm_freq.masks import load_masks
from tvm_freq.models import bundled_masks

TARGET = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1}


def baseline_modules(rev: str) -> tuple[ModuleType, ModuleType]:
    """The fused kernel and schedule modules as they were at git revision ``rev``.

    Read with ``git show`` and imported under private names beside today's, so that both
    versions are built and timed in one process, in interleaved rounds.
    """
    root = Path(__file__).resolve().parents[1]
    mods = []
    for path in ("kernels/freq_pointwise.py", "schedules/freq_pointwise.py"):
        src = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{path}"], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        name = f"_baseline_{path.split('/')[0]}"
        spec = importlib.util.spec_from_loader(name, loader=None)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up while it executes
        exec(compile(src, f"{rev}:{path}", "exec"), mod.__dict__)  # noqa: S102 - our own file
        mods.append(mod)
    return mods[0], mods[1]


def layer_kernel(model: str, cut: int, index: int, max_groups: int = 4, kernels: ModuleType = K):
    """The fused kernel of pointwise layer ``index``, its arguments and output shape
    (``kernels``: the kernel module, today's or a baseline's)."""
    layer = load_masks(bundled_masks(model, cut)).layers[index]
    cin, cout, h, w = pointwise_inputs(model)[index]
    plan = K.align_plan(K.plan_bands(layer.kin, layer.kout, layer.block, max_groups), 16)
    groups = [(g.size, g.cin, g.cout) for g in plan.groups]
    func = kernels.fused_pointwise(1, cin, cout, h, w, layer.block, groups, clip=(0.0, 6.0))
    rng = np.random.default_rng(index)
    x = rng.standard_normal((1, cin, h, w)).astype("float32")
    weight = rng.standard_normal((cout, cin)).astype("float32")
    bias = rng.standard_normal(cout).astype("float32")
    _, macs = kernel_macs(layer.kin, layer.kout, layer.block, (1, cin, h, w), cout,
                          max_groups=max_groups)  # fmt: skip
    return func, [x, *kernels.fused_constants(plan, weight, bias)], (1, cout, h, w), macs


def build(func, knobs: S.FusedKnobs, target: tvm.target.Target, schedules: ModuleType = S):
    """Compile ``func`` with the fused schedule (``schedules``' version) and ``knobs``."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    schedules.schedule_fused_pointwise(sch, knobs)
    scheduled = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    return tvm.compile(tvm.IRModule({"main": scheduled}), target=target)


def main() -> int:
    """Time every layer's kernel under every variant and print a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2-224")
    ap.add_argument("--cut", type=int, default=20, help="bundled mask set (20 or 40)")
    ap.add_argument("--layers", type=int, nargs="+", default=[3, 22, 27])
    ap.add_argument("--variant", action="append", default=[],
                    help="GEMM rows:col_vectors besides the default")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1,
                    help="target cores; set TVM_NUM_THREADS to the same")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the timings here")
    ap.add_argument("--baseline", metavar="REV",
                    help="also build the kernel and schedule as they were at git revision REV "
                    "and time them in the same interleaved rounds (column 'REV')")  # fmt: skip
    args = ap.parse_args()
    target = tvm.target.Target({**TARGET, "num-cores": args.threads})
    base = S.knobs_for(target)
    variants = {"default": base}
    for v in args.variant:
        rows, cols = (int(x) for x in v.split(":"))
        variants[v] = dataclasses.replace(base, rows=rows, col_vectors=cols)
    dev = tvm.cpu()
    out = []
    cols = [*variants, *([args.baseline, f"default / {args.baseline}"] if args.baseline else [])]
    print("| layer | Cin->Cout @ HxW | k | executed MMAC | " + " | ".join(cols) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(cols))
    baseline = baseline_modules(args.baseline) if args.baseline else None
    for index in args.layers:
        func, inputs, shape, macs = layer_kernel(args.model, args.cut, index)
        runs = {name: (build(func, knobs, target), inputs) for name, knobs in variants.items()}
        if baseline is not None:
            bk, bs = baseline
            bfunc, binputs, _, _ = layer_kernel(args.model, args.cut, index, kernels=bk)
            runs[args.baseline] = (build(bfunc, bs.knobs_for(target), target, bs), binputs)
        times: dict[str, list[float]] = {name: [] for name in runs}
        outs = {}
        for name, (ex, arrays) in runs.items():
            tensors = [tvm.runtime.tensor(a) for a in arrays]
            tensors.append(tvm.runtime.tensor(np.zeros(shape, "float32")))
            ex.mod["main"](*tensors)
            outs[name] = tensors
        ref = outs["default"][-1].numpy()
        for tensors in outs.values():  # same weights, same answer
            np.testing.assert_allclose(tensors[-1].numpy(), ref, rtol=1e-4,
                                       atol=1e-4 * np.abs(ref).max())  # fmt: skip
        for _ in range(args.rounds):
            for name, (ex, _) in runs.items():
                f = ex.mod.time_evaluator("main", dev, number=50, repeat=3)
                times[name].append(min(f(*outs[name]).results) * 1e6)
        med = {name: float(np.median(t)) for name, t in times.items()}
        cin, cout = int(inputs[0].shape[1]), shape[1]
        k = int(func.attrs[K.ATTR_K])
        row = " | ".join(f"{t:.1f} us" for t in med.values())
        if args.baseline:
            row += f" | {med['default'] / med[args.baseline]:.2f}"
        print(f"| {index} | {cin}->{cout} @ {shape[2]}x{shape[3]} | {k} | {macs.freq / 1e6:.2f} | "
              + row + " |")  # fmt: skip
        out.append({"layer": index, "executed_macs": macs.freq, "us": med})
    if args.baseline:
        now = sum(r["us"]["default"] for r in out)
        then = sum(r["us"][args.baseline] for r in out)
        print(f"\ntotal over {len(out)} layers: {now:.1f} us, {then:.1f} us at {args.baseline} "
              f"({now / then:.2f})")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "layers": out}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
