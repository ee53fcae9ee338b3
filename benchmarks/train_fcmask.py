"""Learned FCMask band pruning of the CIFAR-style MobileNetV2 on Fashion-MNIST.

Trains the model unpruned (3-channel repeated, 28x28 padded to 32x32), wraps its
pointwise convs in block DCTs, learns per-channel frequency bands (FCMask) with the
weights frozen until the pointwise MAC reduction (transform overhead included)
reaches the target, rounds the masks, refines the weights, and writes
``docs/results/fcmask-fashion-mnist.{json,md}``.

Reduced scale, estimated at about 25 minutes on the shared 2-core development machine
from measured step times (2.5 s per dense step, 5-7 s per DCT-domain step of 128 images,
one thread; the preset uses one thread because two threads on a busy 2-core machine
ran 2-3x slower)::

    python benchmarks/train_fcmask.py --preset reduced --data-dir /path/to/data

Full scale (width 1.0, all 60k images, 30 + 3 + 10 epochs: a day on 2 cores; use a
bigger machine and ``--num-threads N``)::

    python benchmarks/train_fcmask.py --preset full --data-dir /path/to/data

``--data-dir`` may be omitted when ``TVM_FREQ_DATA`` is set or Fashion-MNIST is in
``/usr/share/datasets/fashion-mnist``. Every :class:`tvm_freq.train.TrainConfig`
field is also a flag (``--width``, ``--train-limit``, ``--epochs``, ``--lam`` ...)
and overrides the preset. An interrupted run resumes from ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvm_freq.train import TrainConfig, add_config_flags, config_from_args, run_training

PRESETS: dict[str, dict[str, Any]] = {
    # Sized for < 30 minutes on 2 idle cores: width 0.5, 8k training images, 3 training
    # epochs, mask learning until 2.02x (at most 2 epochs, planned by the middle), masks
    # trimmed to the target, 3 refinement epochs and 1 batch-norm epoch.
    "reduced": {
        "width": 0.5,
        "train_limit": 8000,
        "test_limit": 5000,
        "epochs": 3,
        "mask_epochs": 2,
        "target_reduction": 2.02,
        "target_at": 0.5,
        "refine_epochs": 3,
        "bn_epochs": 1,
        "num_threads": 1,
        "out_dir": "runs/fcmask-reduced",
    },
    # The whole dataset at width 1.0 with augmentation.
    "full": {
        "width": 1.0,
        "train_limit": None,
        "test_limit": None,
        "epochs": 30,
        "augment": True,
        "mask_epochs": 3,
        "refine_epochs": 10,
        "bn_epochs": 1,
        "out_dir": "runs/fcmask-full",
    },
}
RESULT_NAME = "fcmask-fashion-mnist"
TARGET_REDUCTION, MAX_DROP = 2.0, 0.5


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags: ``--preset``, output options, and every TrainConfig field.

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="reduced")
    p.add_argument("--results-dir", default="docs/results", help="where the JSON and table go")
    p.add_argument("--name", default=RESULT_NAME, help="result file stem")
    add_config_flags(p)
    return p


def make_config(args: argparse.Namespace) -> TrainConfig:
    """Preset values overridden by explicit flags.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed flags.

    Returns
    -------
    TrainConfig
        The validated configuration.
    """
    return config_from_args(args, PRESETS[args.preset])


def _fmt_macs(v: float) -> str:
    return f"{v / 1e6:.2f} M"


def write_results(report: dict[str, Any], out: dict[str, Any], stem: Path) -> None:
    """Write ``<stem>.json`` and a markdown table ``<stem>.md``.

    Parameters
    ----------
    report : dict
        :func:`tvm_freq.train.run_training` report.
    out : dict
        Everything for the JSON file.
    stem : pathlib.Path
        Path without suffix.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    m = report["macs"]
    cfg = report["config"]
    rows = [
        ("Top-1 unpruned (%)", f"{report['accuracy_unpruned']:.2f}"),
        ("Top-1 pruned, before refinement (%)", f"{report['accuracy_pruned_before_refine']:.2f}"),
        ("Top-1 pruned, refined (%)", f"{report['accuracy_pruned']:.2f}"),
        ("Accuracy drop (points)", f"{report['accuracy_drop']:.2f}"),
        ("Pointwise MACs, dense", _fmt_macs(m["pointwise_macs_dense"])),
        ("Pointwise MACs, unpruned DCT domain", _fmt_macs(m["pointwise_macs_unpruned_freq"])),
        ("Pointwise MACs, pruned (DCT + bands + IDCT)", _fmt_macs(m["pointwise_macs_pruned"])),
        ("Pointwise MAC reduction, overhead included", f"{m['pointwise_reduction']:.2f}x"),
        ("Whole-network MACs, dense", _fmt_macs(m["network_macs_dense"])),
        ("Whole-network MACs, pruned", _fmt_macs(m["network_macs_pruned"])),
        ("Whole-network MAC reduction", f"{m['network_reduction']:.2f}x"),
        ("Wall time", f"{out['wall_time_s'] / 60:.1f} min"),
    ]
    ok = out["targets"]
    lines = [
        "# Learned FCMask band pruning: MobileNetV2 (CIFAR-style) on Fashion-MNIST",
        "",
        f"Width {cfg['width']}, {cfg['train_limit'] or 'all'} training images, "
        f"{cfg['test_limit'] or 'all'} test images, 3 channels, 32x32. Schedule "
        f"`{cfg['schedule']}`: {cfg['epochs']} training epochs, up to {cfg['mask_epochs']} "
        f"mask epochs (stop at {cfg['target_reduction']}x), {cfg['refine_epochs']} refinement "
        f"epochs, {cfg['bn_epochs']} BN epochs. Masks on `{cfg['where']}` channels, block size "
        f"{cfg['block_size']} (max overhead {cfg['max_overhead']}), penalty weighting "
        f"`{cfg['weighting']}`, lambda from {cfg['lam']} steered by x{cfg['lam_adapt']} per "
        f"step, mask lr {cfg['mask_lr']}; BN statistics re-estimated on "
        f"{cfg['bn_recalibrate']} batches after rounding. MACs are per image.",
        "",
        "| Metric | Value |",
        "| --- | --- |",
        *(f"| {a} | {b} |" for a, b in rows),
        "",
        f"- Pointwise MAC reduction >= {TARGET_REDUCTION}x: "
        f"{'yes' if ok['pointwise_reduction'] else 'no'}",
        f"- Top-1 within {MAX_DROP} points of unpruned: {'yes' if ok['accuracy'] else 'no'}",
        "- The refined model trains for the refinement epochs more than the unpruned one.",
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
    """Run the benchmark.

    Parameters
    ----------
    argv : list of str, optional
        Flags (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 when finished, 3 when ``--max-steps`` interrupted the run.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    cfg = make_config(args)
    command = "python " + shlex.join(["benchmarks/train_fcmask.py", *argv])
    t0 = time.perf_counter()
    report = run_training(cfg)
    if report["interrupted"]:
        print(f"stopped after {report['global_step']} steps; rerun the same command to resume")
        return 3
    m = report["macs"]
    out = {
        "command": command,
        "preset": args.preset,
        "config": report["config"],
        "report": report,
        "targets": {
            "pointwise_reduction": m["pointwise_reduction"] >= TARGET_REDUCTION,
            "accuracy": report["accuracy_drop"] <= MAX_DROP,
        },
        "wall_time_s": report["wall_time_s"],
        "wall_time_this_invocation_s": time.perf_counter() - t0,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
    }
    stem = Path(args.results_dir) / args.name
    write_results(report, out, stem)
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
