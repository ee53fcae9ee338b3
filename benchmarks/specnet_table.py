#!/usr/bin/env python
"""SpecNet Table 1 analog on Fashion-MNIST: relative training memory and accuracy.

For Spec-VGG-16 and Spec-DenseNet (BC) against their spatial twins (same code,
``spectral=False``: Conv2d + ReLU), trained identically on real Fashion-MNIST (28x28
padded to 32x32, one channel):

* memory, relative to the twin: bytes saved for backward per training step (mean over
  the training steps, :class:`tvm_freq.specnet.memory.SavedTensorCounter`) and the peak extra
  resident memory of a training step in a fresh process
  (:func:`tvm_freq.specnet.memory.peak_rss_step`, trained weights, one training batch);
* test accuracy, for each threshold beta (default 0.5, 1.0, 1.5).

Writes ``<out>/specnet-fashion-mnist.json`` and ``.md`` with the command and wall time.
The paper's target: SpecNet within ~1 accuracy point at <= ~40% of the memory.

Presets (``--preset``; any flag overrides):

* ``smoke``: a few steps, to check the pipeline (about a minute);
* ``reduced``: VGG-16 at width 0.25, DenseNet-BC depth 22 growth 12 at width 0.5, 300
  Adam steps of 64 images (two epochs of 9600 images; lr 2e-3 with cosine decay), the
  full 10k test set, two trainings at a time in separate processes with one torch thread
  each; under 30 minutes on this project's 2-core machine with five betas (the wall time
  is in the results file);
* ``full``: the paper's setting: full width, DenseNet-BC depth 40 growth 12, all 60k
  images, batch 128, SGD (lr 0.02, momentum 0.95, halved every 50 epochs) for 300
  epochs, the full test set. Days on a CPU; meant for a GPU box (``--device cuda``,
  with ``--workspace-mb 64`` or so for fewer, larger kernels).

Every preset gives both DenseNet twins a head that flattens the final 8x8 map into the
classifier (``--densenet-head 8``) instead of DenseNet's global average pool
(``--densenet-head 1``): spectral blocks act frequency by frequency, so a global average
pool would show the classifier only the DC of each spectral map (see docs/specnet.md).

Data comes from :func:`tvm_freq.data.load_dataset`: ``--data DIR``, else
``$TVM_FREQ_DATA``, else ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tvm_freq.data import load_dataset
from tvm_freq.specnet import calibrate_, get_specnet, set_workspace, spectral_layers
from tvm_freq.specnet.memory import SavedTensorCounter, peak_rss_step

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(steps=3, epochs=None, batch=16, train_limit=256, test_limit=128,
                  vgg_width=0.125, densenet_depth=10, densenet_growth=12, densenet_width=0.25,
                  densenet_head=8, optimizer="adam", lr=1e-3, schedule="constant", peak=True,
                  jobs=1),
    "reduced": dict(steps=300, epochs=None, batch=64, train_limit=9600, test_limit=None,
                    vgg_width=0.25, densenet_depth=22, densenet_growth=12, densenet_width=0.5,
                    densenet_head=8, optimizer="adam", lr=2e-3, schedule="cosine", peak=True,
                    jobs=2),
    "full": dict(steps=None, epochs=300, batch=128, train_limit=None, test_limit=None,
                 vgg_width=1.0, densenet_depth=40, densenet_growth=12, densenet_width=1.0,
                 densenet_head=8, optimizer="sgd", lr=0.02, schedule="step50", peak=True,
                 jobs=1),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (preset values fill whatever is not given)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="reduced")
    ap.add_argument("--models", nargs="+", default=["vgg16", "densenet"])
    ap.add_argument("--betas", type=float, nargs="+", default=[0.5, 1.0, 1.5])
    ap.add_argument("--data", default=None, help="Fashion-MNIST directory (IDX .gz files)")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--steps", type=int, help="training steps (overrides --epochs)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--train-limit", type=int)
    ap.add_argument("--test-limit", type=int)
    ap.add_argument("--vgg-width", type=float)
    ap.add_argument("--densenet-depth", type=int)
    ap.add_argument("--densenet-growth", type=int)
    ap.add_argument("--densenet-width", type=float)
    ap.add_argument(
        "--densenet-head",
        type=int,
        choices=[1, 2, 4, 8],
        help="DenseNet head, for both twins: average-pool the final 8x8 map to NxN and "
        "flatten into the classifier (1 = DenseNet's global average pool; presets use 8)",
    )
    ap.add_argument(
        "--workspace-mb",
        type=float,
        default=None,
        help="working memory of each spectral block, in training and in the peak "
        "measurement (SpectralConv2d.workspace_bytes; default 0.5 MiB): more means fewer, "
        "larger kernels, which GPUs want, and a higher peak. Saved-for-backward bytes do "
        "not depend on it",
    )
    ap.add_argument("--optimizer", choices=["adam", "sgd"])
    ap.add_argument("--lr", type=float)
    ap.add_argument(
        "--schedule",
        choices=["constant", "cosine", "step50"],
        help="LR schedule: constant, cosine decay to 0 over the run, or the paper's halving "
        "every 50 epochs",
    )
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument(
        "--calibrate-rms",
        type=float,
        default=1.0,
        help="pre-activation RMS that calibrate_ sets in every block of both twins (the "
        "scale beta is measured against; larger makes the spectral tanh less linear)",
    )
    ap.add_argument("--no-peak", dest="peak", action="store_false", default=None)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is much faster than 2 on a shared 2-core box)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        help="trainings run at once, each in its own process with --threads threads",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        ap.error("--jobs must be >= 1")
    if args.workspace_mb is not None and args.workspace_mb <= 0:
        ap.error("--workspace-mb must be positive")
    if args.calibrate_rms <= 0:
        ap.error("--calibrate-rms must be positive")
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steps is None and args.epochs is None:
        ap.error("give --steps or --epochs")
    return args


def model_kwargs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Constructor arguments of a benchmarked model."""
    if name == "vgg16":
        return {"width": args.vgg_width}
    if name == "densenet":
        return {"width": args.densenet_width, "depth": args.densenet_depth,
                "growth": args.densenet_growth, "head_size": args.densenet_head}  # fmt: skip
    raise ValueError(f"unsupported model {name!r} (use vgg16 or densenet)")


def workspace_bytes(args: argparse.Namespace) -> int | None:
    """``--workspace-mb`` in bytes (``None``: the library default)."""
    return None if args.workspace_mb is None else int(args.workspace_mb * 2**20)


def make_optimizer(
    model: torch.nn.Module, args: argparse.Namespace, steps_per_epoch: int, steps: int
):
    """Optimizer and per-step LR schedule (``--schedule``)."""
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.95,
                              weight_decay=args.weight_decay)  # fmt: skip
    if args.schedule == "cosine":
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if args.schedule == "step50":  # the paper's: halve every 50 epochs
        return opt, torch.optim.lr_scheduler.StepLR(opt, 50 * steps_per_epoch, gamma=0.5)
    return opt, None


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    """Top-1 accuracy in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(x), 500):
        out = model(x[i : i + 500].to(device))
        correct += int((out.argmax(1).cpu() == y[i : i + 500]).sum())
    model.train()
    return correct / len(x)


def train_one(name: str, spectral: bool, beta: float, data: dict, args: argparse.Namespace):
    """Train one model; return its metrics and trained state dict."""
    kw = model_kwargs(name, args)
    torch.manual_seed(args.seed)
    model = get_specnet(name, spectral=spectral, beta=beta, in_channels=1, num_classes=10,
                        seed=args.seed, **kw)  # fmt: skip
    x, y = data["train"]
    # Same data-dependent init for both twins (no batch norm: see calibrate_).
    calibrate_(model, x[:256], target_rms=args.calibrate_rms)
    model.to(args.device).train()
    if (ws := workspace_bytes(args)) is not None:
        set_workspace(model, ws)
    n = len(x)
    steps_per_epoch = max(1, n // args.batch)
    steps = args.steps if args.steps is not None else args.epochs * steps_per_epoch
    opt, sched = make_optimizer(model, args, steps_per_epoch, steps)
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(n, generator=g)
    saved, losses, densities = [], [], []
    t0 = time.perf_counter()
    for step in range(steps):
        pos = (step % steps_per_epoch) * args.batch
        if pos == 0 and step > 0:
            perm = torch.randperm(n, generator=g)
        idx = perm[pos : pos + args.batch]
        xb, yb = x[idx].to(args.device), y[idx].to(args.device)
        with SavedTensorCounter(model) as counter:
            loss = F.cross_entropy(model(xb), yb)
        saved.append(counter.stats().activation_bytes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
        if spectral:
            layers = [m.last_density for _, m in spectral_layers(model)]
            densities.append(sum(layers) / len(layers))
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"  {name} {'spec' if spectral else 'spatial'} beta={beta} step {step + 1}/"
                  f"{steps} loss {loss.item():.3f}", flush=True)  # fmt: skip
    train_s = time.perf_counter() - t0
    acc = evaluate(model, *data["test"], args.device)
    result = {
        "accuracy": acc,
        "saved_bytes_mean": sum(saved) / len(saved),
        "saved_bytes_max": max(saved),
        "saved_bytes_last": saved[-1],
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "train_seconds": train_s,
        "seconds_per_step": train_s / steps,
        "steps": steps,
    }
    if spectral:
        result["density_mean"] = sum(densities) / len(densities)
        result["density_last"] = densities[-1]
        result["density_per_layer_last"] = [m.last_density for _, m in spectral_layers(model)]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return result, state


def _train_job(name: str, spectral: bool, beta: float, data: dict, args: argparse.Namespace):
    torch.set_num_threads(args.threads)
    print(f"{name}: {f'SpecNet beta={beta}' if spectral else 'spatial twin'}", flush=True)
    return train_one(name, spectral, beta, data, args)


def _train_all(runs: list[tuple[str, bool, float]], data: dict, args: argparse.Namespace):
    """Train every run, ``args.jobs`` at a time (longest first); ``{run: (result, state)}``."""
    if args.jobs == 1:
        return {run: _train_job(*run, data, args) for run in runs}
    # Spectral runs are the slow ones: start them first so the pool drains evenly.
    order = sorted(runs, key=lambda r: not r[1])
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futures = {run: pool.submit(_train_job, *run, data, args) for run in order}
        return {run: futures[run].result() for run in runs}


def peak(name, spectral, beta, state, data, args) -> int | None:
    """Peak extra RSS of one training step of the trained model, in a fresh process."""
    if not args.peak:
        return None
    x, y = data["train"]
    kw = model_kwargs(name, args)
    width = kw.pop("width")
    res = peak_rss_step(name, x[: args.batch], y[: args.batch], spectral=spectral, beta=beta,
                        width=width, num_classes=10, state_dict=state, threads=args.threads,
                        model_kwargs=kw, workspace_bytes=workspace_bytes(args))  # fmt: skip
    return int(res["peak_bytes"])


def crossing(res: dict, level: float) -> dict | None:
    """Where the saved ratio crosses ``level``, by linear interpolation in beta.

    Parameters
    ----------
    res : dict
        One model's entry of the report (``spatial`` and ``spectral`` by beta).
    level : float
        Saved-bytes ratio, e.g. 0.40.

    Returns
    -------
    dict or None
        ``betas`` (the bracketing pair), ``beta`` and ``delta_points`` (accuracy minus
        the twin's, in points) at the crossing; ``None`` if no adjacent pair brackets it.
    """
    base = res["spatial"]["accuracy"]
    rows = sorted((float(b), r) for b, r in res["spectral"].items())
    for (b0, r0), (b1, r1) in itertools.pairwise(rows):
        s0, s1 = r0["saved_ratio"], r1["saved_ratio"]
        if s0 >= level >= s1 and s0 > s1:
            t = (s0 - level) / (s0 - s1)
            acc = r0["accuracy"] + t * (r1["accuracy"] - r0["accuracy"])
            return {"betas": (b0, b1), "beta": b0 + t * (b1 - b0),
                    "delta_points": 100 * (acc - base)}  # fmt: skip
    return None


def markdown(report: dict) -> str:
    """Render the report as Markdown."""
    lines = [
        "# SpecNet on Fashion-MNIST: memory and accuracy relative to the spatial twins",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Wall time: {report['wall_seconds']:.0f} s; preset `{report['config']['preset']}`; "
        f"{report['environment']['torch']} on {report['environment']['machine']}, "
        f"{report['config']['threads']} torch thread(s) per training, "
        f"{report['config']['jobs']} training(s) at a time.",
        "",
        "Training (the same for every model and twin): {steps} steps of {batch} images "
        "({optimizer}, lr {lr}, {schedule} schedule) from {train} training images; "
        "{test} test images; calibrate_ to pre-activation RMS {calibrate_rms}.".format(
            **report["config"],
            train=report["config"]["train_limit"] or "all",
            test=report["config"]["test_limit"] or "all",
        ),
        "",
        "Memory columns are SpecNet / spatial twin: *saved* = bytes autograd saves for "
        "backward (mean over training steps), *peak* = extra resident memory of one "
        "training step in a fresh process (trained weights). Accuracy is top-1 on the test "
        "images used; Δ is SpecNet minus twin, in points.",
        "",
    ]
    for res in report["results"].values():
        sp = res["spatial"]
        kwargs = ", ".join(f"{k} {v}" for k, v in res["kwargs"].items())
        lines += [
            f"## {res['label']} ({kwargs})",
            "",
            f"Spatial twin: accuracy {100 * sp['accuracy']:.2f}%, saved "
            f"{sp['saved_bytes_mean'] / 2**20:.2f} MiB/step"
            + (f", peak {sp['peak_bytes'] / 2**20:.1f} MiB" if sp.get("peak_bytes") else "")
            + f", {sp['seconds_per_step']:.2f} s/step.",
            "",
            "| beta | saved (%) | peak (%) | kept entries (%) | accuracy (%) | Δ acc | s/step |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for beta, r in res["spectral"].items():
            peak_pct = f"{100 * r['peak_ratio']:.1f}" if r.get("peak_ratio") else "n/a"
            lines.append(
                f"| {beta} | {100 * r['saved_ratio']:.1f} | {peak_pct} | "
                f"{100 * r['density_mean']:.1f} | {100 * r['accuracy']:.2f} | "
                f"{100 * (r['accuracy'] - sp['accuracy']):+.2f} | {r['seconds_per_step']:.2f} |"
            )
        t = res["target"]
        lines += ["", f"Target (saved <= 40% of the twin, accuracy within 1 point): {t}"]
        cross = crossing(res, 0.40)
        if cross is not None:
            lines.append(
                f"Saved = 40% by linear interpolation between betas {cross['betas'][0]} and "
                f"{cross['betas'][1]}: beta {cross['beta']:.2f}, accuracy "
                f"{cross['delta_points']:+.2f} points against the twin."
            )
        lines.append("")
    lines += ["Paper (CIFAR-10, Table 1): SpecNet 37.0% memory at 91.8% (VGG-16) and 37.0% at "
              "92.5% (DenseNet).", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the JSON and Markdown reports."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    train = load_dataset("fashion-mnist", "train", args.data, limit=args.train_limit, channels=1)
    test = load_dataset("fashion-mnist", "test", args.data, limit=args.test_limit, channels=1)
    data = {"train": train.tensors, "test": test.tensors}
    print(f"data: {len(train)} train / {len(test)} test images", flush=True)
    labels = {"vgg16": "Spec-VGG-16", "densenet": "Spec-DenseNet-BC"}
    for name in args.models:
        model_kwargs(name, args)  # validate early
    # Every (model, twin or beta) training is independent: run them in --jobs processes.
    runs = [(n, False, 1.0) for n in args.models]
    runs += [(n, True, b) for n in args.models for b in args.betas]
    trained = _train_all(runs, data, args)
    results: dict[str, Any] = {}
    for name in args.models:
        sp, sp_state = trained[(name, False, 1.0)]
        sp["peak_bytes"] = peak(name, False, 1.0, sp_state, data, args)
        entry: dict[str, Any] = {"label": labels.get(name, name),
                                 "kwargs": model_kwargs(name, args),
                                 "spatial": sp, "spectral": {}}  # fmt: skip
        for beta in args.betas:
            r, state = trained[(name, True, beta)]
            r["peak_bytes"] = peak(name, True, beta, state, data, args)
            r["saved_ratio"] = r["saved_bytes_mean"] / sp["saved_bytes_mean"]
            r["peak_ratio"] = (r["peak_bytes"] / sp["peak_bytes"]
                               if r["peak_bytes"] and sp["peak_bytes"] else None)  # fmt: skip
            entry["spectral"][str(beta)] = r
        ok = [b for b, r in entry["spectral"].items()
              if r["saved_ratio"] <= 0.40 and r["accuracy"] >= sp["accuracy"] - 0.01]  # fmt: skip
        entry["target"] = f"met at beta = {', '.join(ok)}" if ok else "not met at any beta"
        results[name] = entry
    wall = time.perf_counter() - t_start
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "wall_seconds": wall,
        "config": vars(args),
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },  # fmt: skip
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "specnet-fashion-mnist.json").write_text(json.dumps(report, indent=1))
    (out / "specnet-fashion-mnist.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'specnet-fashion-mnist.json'} and .md in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
