"""Calibrate the kernel cost model of this machine's target from in-network kernel timings.

For MobileNetV2 1.0-224 and several mask sets (the bundled masks that remove about 20%
and 40% of the MACs, and the same masks with every kept count scaled, for more varied
bands), every masked layer's fused frequency kernel and its dense kernel are timed in
real runs of the network (``tvm_freq.profitability.measure_latencies``: two builds,
interleaved profiling rounds). A non-negative linear model per kernel kind is fitted to
the times (``tvm_freq.cost_model``), and its decisions are checked set by set with the
set left out of the fit. The model is written where builds find it (the shipped records
of the target, or ``--out``), with a report in ``docs/results/cost-model-<target key>.{md,json}``::

    python benchmarks/calibrate_cost_model.py               # one thread
    python benchmarks/calibrate_cost_model.py --threads 2   # the 2-core target
    python benchmarks/calibrate_cost_model.py --host-cpu    # for this CPU model only

``--host-cpu`` writes ``cost_model.<cpu>.json`` (``tvm_freq.target.host_cpu``) beside the
target's model: builds for this machine's target on a CPU of that model use it first.
Its report also judges the target's own model (calibrated elsewhere) on these timings.

``tvm_freq.build`` then decides per layer with the model by default
(``profitability="auto"``). Rerun after changing a kernel or its schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from tvm_freq import Tuning, UntunedWarning
from tvm_freq.band_plan import kernel_macs
from tvm_freq.cost_model import (
    COST_MODEL_FILE,
    DENSE_FEATURES,
    FREQ_FEATURES,
    KernelCostModel,
    LayerShape,
    cost_model_file,
    fit_cost_model,
)
from tvm_freq.frontend import import_model
from tvm_freq.masks import MaskFile, load_masks
from tvm_freq.models import bundled_onnx
from tvm_freq.passes.frequency_band_pointwise import plan_layers
from tvm_freq.profitability import measure_latencies
from tvm_freq.records import shipped_records_root
from tvm_freq.target import host_cpu, resolve_target, target_key

ROOT = Path(__file__).resolve().parents[1]
MASKS = ROOT / "tvm_freq" / "assets" / "masks"


def scaled(masks: MaskFile, factor: float) -> MaskFile:
    """The masks with every kept count scaled by ``factor`` (at least 1, at most k*k)."""

    def scale(counts, k):
        return [int(min(k * k, max(1, round(c * factor)))) for c in counts]

    layers = tuple(
        replace(lm, kin=tuple(scale(lm.kin, lm.block)), kout=tuple(scale(lm.kout, lm.block)))
        for lm in masks.layers
    )
    return replace(masks, layers=layers)


def mask_sets() -> list[tuple[str, MaskFile]]:
    cut20 = load_masks(MASKS / "mobilenetv2-224-cut20.json")
    cut40 = load_masks(MASKS / "mobilenetv2-224-cut40.json")
    return [("cut20", cut20), ("cut40", cut40), ("cut20 x0.5", scaled(cut20, 0.5)),
            ("cut40 x1.5", scaled(cut40, 1.5))]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved profiling rounds")
    ap.add_argument("--threads", type=int, default=1, help="runtime threads (the target's cores)")
    ap.add_argument("--out", default=None,
                    help="cost model file (default: the shipped records of the target)")
    ap.add_argument("--report", default=None,
                    help="report path without suffix (default docs/results/cost-model-<key>)")
    ap.add_argument("--host-cpu", action="store_true",
                    help="calibrate for this CPU model only: cost_model.<cpu>.json")  # fmt: skip
    args = ap.parse_args(argv)
    cpu = host_cpu() if args.host_cpu else ""
    if args.host_cpu and not cpu:
        ap.error("--host-cpu: /proc/cpuinfo does not name this CPU")
    start = time.perf_counter()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    target = resolve_target(None, args.threads)
    key = target_key(target)
    imported = import_model(str(bundled_onnx("mobilenetv2-224")))
    shape = imported.input_shapes[0]
    samples = []  # (set, ordinal, LayerShape, dense_us, freq_us)
    for name, masks in mask_sets():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntunedWarning)
            lat = measure_latencies(imported.mod, masks, imported, target, Tuning(),
                                    threads=args.threads, rounds=args.rounds)  # fmt: skip
        convs = {lm.ordinal: lm for lm in masks.layers}
        sizes = {d.ordinal: (d.height, d.width) for d in plan_layers(imported.mod, masks)}
        for ordinal, (dense_us, freq_us) in sorted(lat.items()):
            lm = convs[ordinal]
            cout, cin = lm.weight_shape[:2]
            h, w = sizes[ordinal]
            plan, macs = kernel_macs(lm.kin, lm.kout, lm.block, (shape[0], cin, h, w), cout)
            samples.append((name, ordinal, LayerShape.from_plan((shape[0], cin, h, w), cout,
                                                                 plan, macs), dense_us, freq_us))
        print(f"{name}: {len(lat)} layers timed in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
    command = "python benchmarks/calibrate_cost_model.py " + shlex.join(argv or sys.argv[1:])
    model = fit_cost_model([s[2] for s in samples], [s[3] for s in samples],
                           [s[4] for s in samples], key, source=command.strip())  # fmt: skip
    shipped = shipped_records_root() / key
    out = Path(args.out) if args.out else shipped / cost_model_file(cpu)
    # The target's own model, calibrated on another machine, judged on this one's times.
    generic = (KernelCostModel.load(shipped / COST_MODEL_FILE)
               if cpu and (shipped / COST_MODEL_FILE).is_file() else None)  # fmt: skip
    model.save(out)
    checks = _held_out(samples, key, generic)
    report = {
        "command": command.strip(), "target": key, "cpu": cpu, "threads": args.threads,
        "seconds": time.perf_counter() - start,
        "model": {"dense": dict(zip(DENSE_FEATURES, model.dense, strict=True)),
                  "freq": dict(zip(FREQ_FEATURES, model.freq, strict=True))},
        "held_out": checks,
        "layers": [{"set": s[0], "ordinal": s[1], "dense_us": s[3], "freq_us": s[4],
                    "predicted": model.predict(s[2])} for s in samples],
    }  # fmt: skip
    name = f"cost-model-{key}" + (f"-{cpu}" if cpu else "")
    stem = args.report or str(ROOT / "docs" / "results" / name)
    Path(stem + ".json").write_text(json.dumps(report, indent=1) + "\n")
    Path(stem + ".md").write_text(_markdown(report))
    print(_markdown(report))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _held_out(samples, key: str, generic: KernelCostModel | None = None) -> list[dict]:
    """Per mask set: the model fitted without it (and ``generic``, when given), judged on
    its layers' real times."""
    out = []
    for name in dict.fromkeys(s[0] for s in samples):
        train = [s for s in samples if s[0] != name]
        test = [s for s in samples if s[0] == name]
        m = fit_cost_model([s[2] for s in train], [s[3] for s in train],
                           [s[4] for s in train], key)  # fmt: skip
        wrong = lost = best = chosen_macs = wrong_generic = lost_generic = 0.0
        for _, _, layer, dense_us, freq_us in test:
            if generic is not None:
                gd, gf = generic.predict(layer)
                wrong_generic += (gf < gd) != (freq_us < dense_us)
                lost_generic += (freq_us if gf < gd else dense_us) - min(dense_us, freq_us)
            pd, pf = m.predict(layer)
            pick = freq_us if pf < pd else dense_us
            macs_pick = freq_us if layer.dct_macs + layer.gemm_macs + layer.idct_macs < (
                layer.n * layer.height * layer.width * layer.cin * layer.cout) else dense_us
            wrong += (pf < pd) != (freq_us < dense_us)
            lost += pick - min(dense_us, freq_us)
            best += min(dense_us, freq_us)
            chosen_macs += macs_pick - min(dense_us, freq_us)
        out.append({"set": name, "layers": len(test), "wrong_decisions": int(wrong),
                    "time_lost_us": lost, "time_lost_us_mac_rule": chosen_macs,
                    "oracle_us": best,
                    "median_abs_rel_error_freq": float(np.median([
                        abs(m.predict(s[2])[1] / s[4] - 1) for s in test])),
                    "median_abs_rel_error_dense": float(np.median([
                        abs(m.predict(s[2])[0] / s[3] - 1) for s in test]))})  # fmt: skip
        if generic is not None:
            out[-1] |= {"wrong_decisions_target_model": int(wrong_generic),
                        "time_lost_us_target_model": lost_generic}  # fmt: skip
    return out


def _markdown(report: dict) -> str:
    cpu = report.get("cpu", "")
    generic = "wrong_decisions_target_model" in report["held_out"][0]
    lines = [
        f"# Kernel cost model: {report['target']}" + (f", CPU {cpu}" if cpu else ""),
        "",
        f"Written by `{report['command']}` ({report['seconds'] / 60:.1f} min). Per mask set, "
        "the model fitted on the *other* sets decides each layer; the oracle keeps the "
        "kernel that really ran faster. Times are the layers' pointwise kernels, in "
        "microseconds, timed inside runs of MobileNetV2 1.0-224 (batch 1, "
        f"{report['threads']} thread(s))."
        + (" *Target's model*: the target's own `cost_model.json`, calibrated on another "
           "machine, deciding every layer on this CPU's times." if generic else ""),
        "",
        "| mask set | layers | wrong decisions | time lost (model) | time lost (MAC rule) "
        "| oracle total | median error freq / dense |"
        + (" target's model: wrong decisions | time lost |" if generic else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if generic else ""),
    ]  # fmt: skip
    for c in report["held_out"]:
        lines.append(
            f"| {c['set']} | {c['layers']} | {c['wrong_decisions']} | {c['time_lost_us']:.0f} "
            f"| {c['time_lost_us_mac_rule']:.0f} | {c['oracle_us']:.0f} | "
            f"{c['median_abs_rel_error_freq']:.0%} / {c['median_abs_rel_error_dense']:.0%} |"
            + (f" {c['wrong_decisions_target_model']} | {c['time_lost_us_target_model']:.0f} |"
               if generic else "")
        )  # fmt: skip
    lines += ["", "Coefficients (microseconds per unit), fitted on every set:", "",
              "| kernel | feature | us per unit |", "|---|---|---:|"]  # fmt: skip
    for kind in ("dense", "freq"):
        for feat, v in report["model"][kind].items():
            lines.append(f"| {kind} | {feat} | {v:.3g} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
