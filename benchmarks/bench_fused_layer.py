"""Time single fused frequency kernels of MobileNetV2-224 layers, knob against knob.

Builds the fused kernel (``tvm_freq.kernels.freq_pointwise.fused_pointwise``) of chosen
pointwise layers with a bundled mask set and random weights, schedules it with the
default knobs for the target and with each ``--variant`` (GEMM ``rows:col_vectors``),
and times them in interleaved rounds (minimum of each round's repeats, median over
rounds), one thread unless ``--threads``::

    TVM_NUM_THREADS=1 python benchmarks/bench_fused_layer.py --layers 3 22 27 \\
        --variant 12:2 --variant 8:3 --variant 6:4

``--json`` keeps the timings; ``--compare`` reads such a file from another version of the
kernel (a checkout of an earlier commit) and adds its times and the ratio.

For kernel-level studies; the whole-network numbers come from ``tvm-freq bench``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

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


def layer_kernel(model: str, cut: int, index: int, max_groups: int = 4):
    """The fused kernel of pointwise layer ``index``, its arguments and output shape."""
    layer = load_masks(bundled_masks(model, cut)).layers[index]
    cin, cout, h, w = pointwise_inputs(model)[index]
    plan = K.align_plan(K.plan_bands(layer.kin, layer.kout, layer.block, max_groups), 16)
    groups = [(g.size, g.cin, g.cout) for g in plan.groups]
    func = K.fused_pointwise(1, cin, cout, h, w, layer.block, groups, clip=(0.0, 6.0))
    rng = np.random.default_rng(index)
    x = rng.standard_normal((1, cin, h, w)).astype("float32")
    weight = rng.standard_normal((cout, cin)).astype("float32")
    bias = rng.standard_normal(cout).astype("float32")
    _, macs = kernel_macs(layer.kin, layer.kout, layer.block, (1, cin, h, w), cout,
                          max_groups=max_groups)  # fmt: skip
    return func, [x, *K.fused_constants(plan, weight, bias)], (1, cout, h, w), macs


def build(func, knobs: S.FusedKnobs, target: tvm.target.Target):
    """Compile ``func`` with the fused schedule and ``knobs``."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    S.schedule_fused_pointwise(sch, knobs)
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
    ap.add_argument("--compare", help="a --json file of an earlier run (another version of "
                    "the kernel): adds its default times and the ratio")  # fmt: skip
    args = ap.parse_args()
    target = tvm.target.Target({**TARGET, "num-cores": args.threads})
    base = S.knobs_for(target)
    variants = {"default": base}
    for v in args.variant:
        rows, cols = (int(x) for x in v.split(":"))
        variants[v] = dataclasses.replace(base, rows=rows, col_vectors=cols)
    dev = tvm.cpu()
    out = []
    before = {}
    if args.compare:
        with open(args.compare) as fh:
            before = {r["layer"]: r["us"]["default"] for r in json.load(fh)["layers"]}
    extra = " | earlier | now / earlier" if before else ""
    print("| layer | Cin->Cout @ HxW | k | executed MMAC | " + " | ".join(variants) + extra + " |")
    print("|---|---|---:|---:|" + "---:|" * (len(variants) + 2 * bool(before)))
    for index in args.layers:
        func, inputs, shape, macs = layer_kernel(args.model, args.cut, index)
        exes = {name: build(func, knobs, target) for name, knobs in variants.items()}
        tensors = [tvm.runtime.tensor(a) for a in inputs]
        tensors.append(tvm.runtime.tensor(np.zeros(shape, "float32")))
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, ex in exes.items():
                f = ex.mod.time_evaluator("main", dev, number=50, repeat=3)
                times[name].append(min(f(*tensors).results) * 1e6)
        med = {name: float(np.median(t)) for name, t in times.items()}
        cin, cout = int(inputs[0].shape[1]), shape[1]
        k = int(func.attrs[K.ATTR_K])
        row = " | ".join(f"{t:.1f} us" for t in med.values())
        if index in before:
            row += f" | {before[index]:.1f} us | {med['default'] / before[index]:.2f}"
        print(f"| {index} | {cin}->{cout} @ {shape[2]}x{shape[3]} | {k} | {macs.freq / 1e6:.2f} | "
              + row + " |")  # fmt: skip
        out.append({"layer": index, "executed_macs": macs.freq, "us": med})
    if before:
        now = sum(r["us"]["default"] for r in out if r["layer"] in before)
        then = sum(before[r["layer"]] for r in out if r["layer"] in before)
        print(f"\ntotal over {len(before)} layers: {now:.1f} us now, {then:.1f} us earlier "
              f"({now / then:.2f})")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "layers": out}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
