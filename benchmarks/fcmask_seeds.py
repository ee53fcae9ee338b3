"""FCMask over several seeds, against an unpruned baseline trained as long.

For each seed it runs two trainings of :func:`tvm_freq.train.run_training`:

* **pruned**: the ``reduced`` preset of ``benchmarks/train_fcmask.py`` (with any flag
  overrides): train, learn masks until the target pointwise MAC reduction (transform
  overhead included), round, refine, BN fine-tune;
* **baseline**: the same model, data and seed, unpruned (``schedule="none"``), trained
  for as many epochs as the pruned model's weights get (training + refinement + BN
  epochs), so the comparison does not favour the pruned model.

It reports the accuracy drop against that baseline (and against the unpruned model at
the end of the shorter training phase), the mean and spread over seeds, and writes
``docs/results/fcmask-seeds.{json,md}``. Every run resumes from its directory under
``--work``; ``--jobs 2`` runs two trainings at a time (one thread each)::

    python benchmarks/fcmask_seeds.py --data-dir /path/to/data --seeds 0 1 \\
        --target-reduction 2.5 --jobs 2 --work runs/fcmask-seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from train_fcmask import PRESETS

from tvm_freq.train import TrainConfig, add_config_flags, config_from_args, run_training

RESULT_NAME = "fcmask-seeds"
KINDS = ("pruned", "baseline")
TARGET_REDUCTION, MAX_DROP = 2.5, 0.5


def build_parser() -> argparse.ArgumentParser:
    """Flags: seeds, jobs, work and results directories, and every TrainConfig field."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--jobs", type=int, default=1, help="trainings run at a time")
    p.add_argument("--work", default="runs/fcmask-seeds", help="run directories (resumable)")
    p.add_argument("--results-dir", default="docs/results")
    p.add_argument("--name", default=RESULT_NAME)
    p.add_argument("--one", nargs=2, metavar=("KIND", "SEED"), help=argparse.SUPPRESS)
    add_config_flags(p)
    return p


def run_config(args: argparse.Namespace, kind: str, seed: int) -> TrainConfig:
    """The configuration of one run: the reduced preset, the flags, the seed and kind.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed flags.
    kind : {"pruned", "baseline"}
        Which run.
    seed : int
        Seed.

    Returns
    -------
    TrainConfig
        Validated configuration; the baseline trains ``epochs + refine_epochs +
        bn_epochs`` epochs unpruned.
    """
    base = {**PRESETS["reduced"], "target_reduction": TARGET_REDUCTION}
    pruned = config_from_args(args, base)
    values: dict[str, Any] = {
        "seed": seed,
        "out_dir": str(Path(args.work) / f"{kind}-s{seed}"),
        "progress": False,
    }
    if kind == "baseline":
        values.update(
            schedule="none",
            epochs=pruned.epochs + pruned.refine_epochs + pruned.bn_epochs,
        )
    return dataclasses.replace(pruned, **values)


def run_one(args: argparse.Namespace, kind: str, seed: int) -> dict[str, Any]:
    """Run (or resume) one training and write its report as ``result.json``."""
    cfg = run_config(args, kind, seed)
    report = run_training(cfg)
    if report["interrupted"]:
        raise SystemExit(3)
    keep = {k: v for k, v in report.items() if k != "state_dict"}
    out = Path(cfg.out_dir) / "result.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(keep, indent=2, default=str) + "\n")
    return keep


def _spawn(argv: list[str], kind: str, seed: int, work: Path) -> None:
    log = work / f"{kind}-s{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, *argv, "--one", kind, str(seed)]
    with open(log, "a") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"{kind} seed {seed} failed (exit {rc}); see {log}")


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def summarize(args: argparse.Namespace, command: str, wall: float) -> dict[str, Any]:
    """Read every run's ``result.json`` and aggregate per seed and over seeds."""
    rows = []
    for seed in args.seeds:
        res = {k: json.loads((Path(args.work) / f"{k}-s{seed}" / "result.json").read_text())
               for k in KINDS}  # fmt: skip
        p, b = res["pruned"], res["baseline"]
        rows.append({
            "seed": seed,
            "baseline_accuracy": b["accuracy_unpruned"],
            "baseline_epochs": b["config"]["epochs"],
            "unpruned_accuracy_short": p["accuracy_unpruned"],
            "pruned_accuracy": p["accuracy_pruned"],
            "drop_vs_baseline": b["accuracy_unpruned"] - p["accuracy_pruned"],
            "drop_vs_short": p["accuracy_unpruned"] - p["accuracy_pruned"],
            "pointwise_reduction": p["macs"]["pointwise_reduction"],
            "network_reduction": p["macs"]["network_reduction"],
            "wall_time_s": p["wall_time_s"] + b["wall_time_s"],
        })  # fmt: skip
    keys = ("baseline_accuracy", "pruned_accuracy", "drop_vs_baseline", "drop_vs_short",
            "pointwise_reduction", "network_reduction")  # fmt: skip
    agg = {k: _stats([r[k] for r in rows]) for k in keys}
    cfg = json.loads((Path(args.work) / f"pruned-s{args.seeds[0]}" / "result.json").read_text())
    return {
        "command": command,
        "config": cfg["config"],
        "seeds": rows,
        "summary": agg,
        "targets": {
            "pointwise_reduction": agg["pointwise_reduction"]["min"] >= TARGET_REDUCTION,
            "accuracy": agg["drop_vs_baseline"]["mean"] <= MAX_DROP,
        },
        "wall_time_this_invocation_s": wall,
    }


def write_results(out: dict[str, Any], stem: Path) -> None:
    """Write ``<stem>.json`` and the markdown table ``<stem>.md``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    cfg, s = out["config"], out["summary"]

    def ms(key: str, fmt: str = ".2f") -> str:
        v = s[key]
        return f"{v['mean']:{fmt}} ± {v['std']:{fmt}} ({v['min']:{fmt}} .. {v['max']:{fmt}})"

    lines = [
        "# FCMask over seeds, against an unpruned baseline trained as long",
        "",
        f"MobileNetV2 (CIFAR-style) width {cfg['width']} on Fashion-MNIST 32x32, "
        f"{cfg['train_limit'] or 'all'} training and {cfg['test_limit'] or 'all'} test images. "
        f"Pruned: {cfg['epochs']} training epochs, masks (`{cfg['weighting']}` penalty) until "
        f"{cfg['target_reduction']}x pointwise MACs (transform overhead included), "
        f"{cfg['refine_epochs']} refinement and {cfg['bn_epochs']} BN epochs. Baseline: the "
        f"same seed unpruned for {out['seeds'][0]['baseline_epochs']} epochs.",
        "",
        "| seed | baseline top-1 | unpruned after training phase | pruned top-1 | drop vs baseline "
        "| pointwise MAC reduction | whole-network |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['seed']} | {r['baseline_accuracy']:.2f} | {r['unpruned_accuracy_short']:.2f} "
            f"| {r['pruned_accuracy']:.2f} | {r['drop_vs_baseline']:.2f} "
            f"| {r['pointwise_reduction']:.2f}x | {r['network_reduction']:.2f}x |"
            for r in out["seeds"]
        ),
        "",
        "Mean ± standard deviation (min .. max) over seeds:",
        "",
        f"- drop vs baseline (points): {ms('drop_vs_baseline')}",
        f"- drop vs the unpruned model after the training phase: {ms('drop_vs_short')}",
        f"- pointwise MAC reduction: {ms('pointwise_reduction')}",
        f"- baseline top-1: {ms('baseline_accuracy')}; pruned top-1: {ms('pruned_accuracy')}",
        "",
        f"- Pointwise MAC reduction >= {TARGET_REDUCTION}x on every seed: "
        f"{'yes' if out['targets']['pointwise_reduction'] else 'no'}",
        f"- Mean drop vs baseline <= {MAX_DROP} points: "
        f"{'yes' if out['targets']['accuracy'] else 'no'}",
        "",
        "Command:",
        "",
        "```",
        out["command"],
        "```",
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Run every seed's two trainings (resuming), then aggregate."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.one is not None:
        run_one(args, args.one[0], int(args.one[1]))
        return 0
    if args.jobs < 1:
        raise SystemExit("--jobs must be >= 1")
    for kind in KINDS:  # fail on a bad flag before spawning anything
        run_config(args, kind, args.seeds[0])
    t0 = time.perf_counter()
    work = Path(args.work)
    todo = [(k, s) for s in args.seeds for k in KINDS
            if not (work / f"{k}-s{s}" / "result.json").exists()]  # fmt: skip
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for f in [pool.submit(_spawn, argv, k, s, work) for k, s in todo]:
            f.result()
    command = "python " + shlex.join(["benchmarks/fcmask_seeds.py", *argv])
    out = summarize(args, command, time.perf_counter() - t0)
    stem = Path(args.results_dir) / args.name
    write_results(out, stem)
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
