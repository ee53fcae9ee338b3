#!/usr/bin/env python
"""SpecNet Table 1 analog on Fashion-MNIST: relative training memory and accuracy.

For Spec-VGG-16 and Spec-DenseNet-BC against their spatial twins (same code,
``spectral=False``: Conv2d + ReLU), trained identically on real Fashion-MNIST (28x28
padded to 32x32, one channel), for each spectral activation (``--activations``:
``spectral_tanh`` is the paper's block, ``spatial_relu`` the variant beyond the paper),
each threshold beta and each seed (``--seeds``; a seed fixes the initialisation and the
batch order, and every SpecNet is paired with the twin of its seed):

* **saved** %: bytes autograd saves for backward per training step (mean over the
  training steps, :class:`tvm_freq.specnet.memory.SavedTensorCounter`), SpecNet / twin;
* **overall** %: the training process's peak as the paper reports it, parameters +
  optimizer state + the peak of one training step with its gradients and optimizer step
  (:func:`tvm_freq.specnet.memory.peak_rss_step`, trained weights, a fresh process);
  **step peak** % is the last term alone;
* **Δ acc**: test accuracy minus the twin's, in points;
* **kept** %: kept share of the unique spectral entries (mean over steps and blocks).

Rows give the mean ± sample standard deviation over the seeds. Writes
``<out>/specnet-fashion-mnist.json`` and ``.md`` with the command and wall time.
The target (issue 19): at most 40% of the twin's saved bytes within 1 point of a twin
trained to at least 88%.

Presets (``--preset``; any flag overrides, and ``--recipe`` overrides the preset's):

* ``smoke``: a few steps on a few images, to check the pipeline (about a minute);
* ``reduced``: the earlier reduced run: VGG-16 width 0.25, DenseNet-BC depth 22 growth
  12 width 0.5, 300 Adam steps of 64 of 9600 images (lr 2e-3, cosine), one seed, the
  paper's block;
* ``table1``: the issue-19 table at reduced width: the paper's recipe
  (``--recipe paper``: SGD, momentum 0.95, lr 0.02 halved every ``--halve-every``
  steps, by default six times over the run, as 300 epochs halved every 50) for 3000
  steps of 64 of all 60k images, both activations, betas 0.5, 0.75, 1.0, 1.5, seeds 0
  and 1, two trainings at a time. Tens of CPU-hours; see docs/specnet.md;
* ``full``: paper scale: full width, DenseNet-BC depth 40 growth 12, 300 epochs of batch
  128, the paper's recipe (halved every 50 epochs). Meant for a GPU box
  (``--device cuda --workspace-mb 64``).

Resumable: each training writes a checkpoint every ``--checkpoint-every`` steps and, when
done, its result, under ``<out>/runs/<fingerprint of the training settings>/``. Run the
same command again (e.g. after an interruption, or in the background with ``nohup``) and
finished runs are read back, interrupted ones continue from their checkpoint.

Every preset gives both DenseNet twins a head that flattens the final 8x8 map into the
classifier (``--densenet-head 8``) instead of DenseNet's global average pool (see
docs/specnet.md). Data comes from :func:`tvm_freq.data.load_dataset`: ``--data DIR``,
else ``$TVM_FREQ_DATA``, else ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tvm_freq.data import load_dataset
from tvm_freq.specnet import ACTIVATIONS, calibrate_, get_specnet, set_workspace, spectral_layers
from tvm_freq.specnet.memory import SavedTensorCounter, peak_rss_step

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(steps=3, epochs=None, batch=16, train_limit=256, test_limit=128,
                  vgg_width=0.125, densenet_depth=10, densenet_growth=12, densenet_width=0.25,
                  densenet_head=8, recipe="adam-cosine", peak=True, jobs=1, betas=[0.75],
                  seeds=[0, 1], activations=list(ACTIVATIONS), checkpoint_every=2),
    "reduced": dict(steps=300, epochs=None, batch=64, train_limit=9600, test_limit=None,
                    vgg_width=0.25, densenet_depth=22, densenet_growth=12, densenet_width=0.5,
                    densenet_head=8, recipe="adam-cosine", peak=True, jobs=2,
                    betas=[0.5, 1.0, 1.5], seeds=[0], activations=["spectral_tanh"],
                    checkpoint_every=100),
    "table1": dict(steps=3000, epochs=None, batch=64, train_limit=None, test_limit=None,
                   vgg_width=0.25, densenet_depth=22, densenet_growth=12, densenet_width=0.5,
                   densenet_head=8, recipe="paper", peak=True, jobs=2,
                   betas=[0.5, 0.75, 1.0, 1.5], seeds=[0, 1], activations=list(ACTIVATIONS),
                   variant_betas=[0.1, 0.25, 0.5, 0.75, 1.0, 1.5], checkpoint_every=200),
    "full": dict(steps=None, epochs=300, batch=128, train_limit=None, test_limit=None,
                 vgg_width=1.0, densenet_depth=40, densenet_growth=12, densenet_width=1.0,
                 densenet_head=8, recipe="paper", peak=True, jobs=1,
                 betas=[0.5, 0.75, 1.0, 1.5], seeds=[0, 1], activations=list(ACTIVATIONS),
                 variant_betas=[0.1, 0.25, 0.5, 0.75, 1.0, 1.5], checkpoint_every=500),
}  # fmt: skip

# --recipe: optimizer, lr and schedule, the same for both members of every pair.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(optimizer="sgd", lr=0.02, schedule="halve"),  # Sec. 4 of the paper
    "adam-cosine": dict(optimizer="adam", lr=2e-3, schedule="cosine"),
}
LABELS = {"vgg16": "Spec-VGG-16", "densenet": "Spec-DenseNet-BC"}
ACT_LABELS = {"spectral_tanh": "paper block (spectral_tanh)",
              "spatial_relu": "variant beyond the paper (spatial_relu)"}  # fmt: skip
TWIN_TARGET = 0.88


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (recipe, then preset values fill whatever is not given)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="reduced")
    ap.add_argument("--models", nargs="+", default=["vgg16", "densenet"])
    ap.add_argument("--activations", nargs="+", choices=list(ACTIVATIONS),
                    help="spectral blocks to compare: spectral_tanh (the paper's) and/or "
                    "spatial_relu (beyond the paper)")  # fmt: skip
    ap.add_argument("--betas", type=float, nargs="+")
    ap.add_argument(
        "--variant-betas",
        type=float,
        nargs="+",
        help="betas of the spatial_relu variant (default --betas): it thresholds the "
        "post-activation spectrum, whose entries are smaller, so a beta keeps fewer of them",
    )
    ap.add_argument("--seeds", type=int, nargs="+", help="one twin and SpecNet set per seed")
    ap.add_argument("--seed", type=int, help="a single seed (same as --seeds N)")
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
        help="DenseNet head, for both twins: average-pool the final 8x8 map to NxN "
        "and flatten into the classifier (1 = global average pool; presets use 8)",
    )
    ap.add_argument(
        "--workspace-mb",
        type=float,
        default=None,
        help="working memory of each spectral block, in training and in the peak "
        "measurement (default 0.5 MiB); saved bytes do not depend on it",
    )
    ap.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help="training recipe of every twin and SpecNet: paper = SGD momentum "
        "0.95, lr 0.02 halved every --halve-every steps; adam-cosine = Adam lr "
        "2e-3, cosine decay. --optimizer/--lr/--schedule override its parts",
    )
    ap.add_argument("--optimizer", choices=["adam", "sgd"], help="sgd has momentum 0.95")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--schedule", choices=["constant", "cosine", "halve", "step50"],
                    help="constant; cosine decay to 0; halve every --halve-every steps; "
                    "step50: halve every 50 epochs")  # fmt: skip
    ap.add_argument("--halve-every", type=int,
                    help="steps between halvings of --schedule halve (default: a sixth of "
                    "the run, the paper's 300 epochs halved every 50)")  # fmt: skip
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument(
        "--calibrate-rms",
        type=float,
        default=1.0,
        help="pre-activation RMS that calibrate_ sets in every block of both twins",
    )
    ap.add_argument("--no-peak", dest="peak", action="store_false", default=None)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per training (1 is much faster than 2 on a shared box)",
    )
    ap.add_argument("--jobs", type=int, help="trainings at once, each in its own process")
    ap.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: tabulate the finished runs of the grid, each row "
                         "over the seeds it has (its seeds column says which)")  # fmt: skip
    ap.add_argument(
        "--twins-only",
        action="store_true",
        help="train and report the spatial twins only (check the 88%% target first; the "
        "SpecNet runs of the same settings reuse them)",
    )
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.seed is not None:
        if args.seeds is not None:
            ap.error("give --seed or --seeds, not both")
        args.seeds = [args.seed]
    preset = PRESETS[args.preset]
    for key, value in RECIPES[args.recipe or preset["recipe"]].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.variant_betas is None:
        args.variant_betas = args.betas
    if args.twins_only:
        args.activations = []
    if args.steps is None and args.epochs is None:
        ap.error("give --steps or --epochs")
    for name, low in (("jobs", 1), ("checkpoint_every", 1), ("halve_every", 1)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            ap.error(f"--{name.replace('_', '-')} must be >= {low}")
    if args.workspace_mb is not None and args.workspace_mb <= 0:
        ap.error("--workspace-mb must be positive")
    if args.calibrate_rms <= 0:
        ap.error("--calibrate-rms must be positive")
    for name in args.models:
        if name not in LABELS:
            ap.error(f"unsupported model {name!r} (use vgg16 or densenet)")
    return args


def model_kwargs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Constructor arguments of a benchmarked model (both twins)."""
    if name == "vgg16":
        return {"width": args.vgg_width}
    return {"width": args.densenet_width, "depth": args.densenet_depth,
            "growth": args.densenet_growth, "head_size": args.densenet_head}  # fmt: skip


def betas_for(activation: str, args: argparse.Namespace) -> list[float]:
    """The thresholds a spectral activation is run at."""
    return [float(b) for b in (args.variant_betas if activation == "spatial_relu" else args.betas)]


def workspace_bytes(args: argparse.Namespace) -> int | None:
    """``--workspace-mb`` in bytes (``None``: the library default)."""
    return None if args.workspace_mb is None else int(args.workspace_mb * 2**20)


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """One training: a twin (``activation`` None) or a SpecNet at one beta, for one seed."""

    model: str
    seed: int
    activation: str | None = None
    beta: float | None = None

    @property
    def spectral(self) -> bool:
        return self.activation is not None

    @property
    def key(self) -> str:
        if not self.spectral:
            return f"{self.model}-twin-s{self.seed}"
        return f"{self.model}-{self.activation}-b{self.beta:g}-s{self.seed}"


# Settings that change what a training computes; a different value is a different run.
_FINGERPRINT = ("steps", "epochs", "batch", "train_limit", "test_limit", "vgg_width",
                "densenet_depth", "densenet_growth", "densenet_width", "densenet_head",
                "optimizer", "lr", "schedule", "halve_every", "weight_decay",
                "calibrate_rms")  # fmt: skip


def runs_dir(args: argparse.Namespace) -> Path:
    """Where the runs of these training settings keep checkpoints and results."""
    cfg = {k: getattr(args, k) for k in _FINGERPRINT}
    digest = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
    d = Path(args.out) / "runs" / digest
    d.mkdir(parents=True, exist_ok=True)
    (d / "settings.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))
    return d


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".json":
        tmp.write_text(json.dumps(obj, indent=1))
    else:
        torch.save(obj, tmp)
    os.replace(tmp, path)  # an interrupted write never leaves a broken file


_DATA: dict[str, Any] = {}


def get_data(args: argparse.Namespace) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fashion-MNIST at 32x32, one channel; loaded once per process."""
    if not _DATA:
        train = load_dataset("fashion-mnist", "train", args.data, limit=args.train_limit,
                             channels=1)  # fmt: skip
        test = load_dataset("fashion-mnist", "test", args.data, limit=args.test_limit, channels=1)
        _DATA.update(train=train.tensors, test=test.tensors)
    return _DATA


def lr_factor(args: argparse.Namespace, step: int, steps: int, steps_per_epoch: int) -> float:
    """Multiplier of ``--lr`` at ``step`` (a pure function of the step: resumes exactly)."""
    if args.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / steps))
    if args.schedule == "halve":
        every = args.halve_every or max(1, steps // 6)
        return 0.5 ** (step // every)
    if args.schedule == "step50":
        return 0.5 ** (step // (50 * steps_per_epoch))
    return 1.0


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """The optimizer of every twin and SpecNet (SGD has the paper's momentum, 0.95)."""
    if args.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.95,
                           weight_decay=args.weight_decay)  # fmt: skip


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


def build(run: Run, args: argparse.Namespace) -> torch.nn.Module:
    """The run's model, calibrated on the first 256 training images (both twins alike)."""
    kw = model_kwargs(run.model, args)
    if run.spectral:
        kw["activation"] = run.activation
    model = get_specnet(run.model, spectral=run.spectral, beta=run.beta or 0.0, in_channels=1,
                        num_classes=10, seed=run.seed, **kw)  # fmt: skip
    calibrate_(model, get_data(args)["train"][0][:256], target_rms=args.calibrate_rms)
    model.to(args.device).train()
    if (ws := workspace_bytes(args)) is not None:
        set_workspace(model, ws)
    return model


def train_one(run: Run, args: argparse.Namespace, store: Path) -> dict[str, Any]:
    """Train (or resume, or read back) one run; return its metrics."""
    done = store / f"{run.key}.json"
    if done.exists():
        result = json.loads(done.read_text())
        if args.peak and result.get("peak_settings") != peak_settings(args):
            # Trained, but measured without the peak or with other peak settings.
            state = torch.load(store / f"{run.key}.pt", weights_only=True)
            result.update(measure_peak(run, state, args))
            _atomic_save(result, done)
        return result
    ckpt_path = store / f"{run.key}.ckpt.pt"
    data = get_data(args)
    x, y = data["train"]
    model = build(run, args)
    n = len(x)
    steps_per_epoch = max(1, n // args.batch)
    steps = args.steps if args.steps is not None else args.epochs * steps_per_epoch
    opt = make_optimizer(model, args)
    g = torch.Generator().manual_seed(run.seed)
    st: dict[str, Any] = {"step": 0, "saved": [], "losses": [], "densities": [], "seconds": 0.0,
                          "perm": torch.randperm(n, generator=g)}  # fmt: skip
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        g.set_state(ck["rng"])
        st = ck["state"]
        print(f"  {run.key}: resumed at step {st['step']}/{steps}", flush=True)
    t0 = time.perf_counter() - st["seconds"]
    for step in range(st["step"], steps):
        pos = (step % steps_per_epoch) * args.batch
        if pos == 0 and step > 0:
            st["perm"] = torch.randperm(n, generator=g)
        idx = st["perm"][pos : pos + args.batch]
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(args, step, steps, steps_per_epoch)
        with SavedTensorCounter(model) as counter:
            loss = F.cross_entropy(model(x[idx].to(args.device)), y[idx].to(args.device))
        st["saved"].append(counter.stats().activation_bytes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        st["losses"].append(loss.item())
        if run.spectral:
            layers = [m.last_density for _, m in spectral_layers(model)]
            st["densities"].append(sum(layers) / len(layers))
        st["step"] = step + 1
        if st["step"] % args.checkpoint_every == 0 and st["step"] < steps:
            st["seconds"] = time.perf_counter() - t0
            _atomic_save({"model": model.state_dict(), "opt": opt.state_dict(),
                          "rng": g.get_state(), "state": st}, ckpt_path)  # fmt: skip
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"  {run.key} step {step + 1}/{steps} loss {loss.item():.3f}", flush=True)
    train_s = time.perf_counter() - t0
    saved = st["saved"]
    result: dict[str, Any] = {
        "key": run.key, "model": run.model, "seed": run.seed, "activation": run.activation,
        "beta": run.beta, "accuracy": evaluate(model, *data["test"], args.device),
        "saved_bytes_mean": sum(saved) / len(saved), "saved_bytes_max": max(saved),
        "final_loss": sum(st["losses"][-10:]) / len(st["losses"][-10:]),
        "train_seconds": train_s, "seconds_per_step": train_s / steps, "steps": steps,
    }  # fmt: skip
    if run.spectral:
        result["density_mean"] = sum(st["densities"]) / len(st["densities"])
        result["density_per_layer_last"] = [m.last_density for _, m in spectral_layers(model)]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    result.update(measure_peak(run, state, args))
    _atomic_save(state, store / f"{run.key}.pt")
    _atomic_save(result, done)
    ckpt_path.unlink(missing_ok=True)
    return result


def measure_peak(run: Run, state: dict, args: argparse.Namespace) -> dict[str, Any]:
    """Step and overall peak of a training step with the run's optimizer, fresh process."""
    if not args.peak:
        return {}
    x, y = get_data(args)["train"]
    kw = model_kwargs(run.model, args)
    width = kw.pop("width")
    if run.spectral:
        kw["activation"] = run.activation
    res = peak_rss_step(run.model, x[: args.batch], y[: args.batch], spectral=run.spectral,
                        beta=run.beta or 0.0, width=width, num_classes=10, state_dict=state,
                        threads=args.threads, model_kwargs=kw, optimizer=args.optimizer,
                        workspace_bytes=workspace_bytes(args))  # fmt: skip
    keys = ("peak_bytes", "overall_peak_bytes", "param_bytes", "optimizer_state_bytes")
    return {**{k: res[k] for k in keys}, "peak_settings": peak_settings(args)}


def peak_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the peak measurement depends on besides the trained weights."""
    return {"workspace_mb": args.workspace_mb, "optimizer": args.optimizer, "batch": args.batch}


def _job(run: Run, args: argparse.Namespace, store: Path) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    return train_one(run, args, store)


def train_all(runs: list[Run], args: argparse.Namespace, store: Path) -> dict[Run, dict]:
    """Train every run, ``args.jobs`` at a time, spectral (slow) ones first."""
    if args.jobs == 1:
        return {run: _job(run, args, store) for run in runs}
    order = sorted(runs, key=lambda r: not r.spectral)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futures = {run: pool.submit(_job, run, args, store) for run in order}
        return {run: futures[run].result() for run in runs}


# --------------------------------------------------------------------------- report


def _stats(values: list[float]) -> dict[str, Any]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": mean, "sd": sd, "values": values}


def _fmt(s: dict | None, scale: float = 100.0, digits: int = 1, sign: bool = False) -> str:
    if s is None:
        return "n/a"
    m = f"{scale * s['mean']:{'+' if sign else ''}.{digits}f}"
    return m if s["sd"] is None else f"{m} ± {scale * s['sd']:.{digits}f}"


def aggregate(results: dict[Run, dict], args: argparse.Namespace) -> dict[str, Any]:
    """Per model: twin accuracy, and per activation and beta the paired ratios over seeds."""
    table: dict[str, Any] = {}
    for name in args.models:
        twins = {s: results[Run(name, s)] for s in args.seeds if Run(name, s) in results}
        if not twins:
            continue
        entry: dict[str, Any] = {
            "label": LABELS[name], "kwargs": model_kwargs(name, args),
            "twin_accuracy": _stats([t["accuracy"] for t in twins.values()]),
            "twin_saved_bytes": _stats([t["saved_bytes_mean"] for t in twins.values()]),
            "rows": {},
        }  # fmt: skip
        if all("overall_peak_bytes" in t for t in twins.values()):
            entry["twin_overall_bytes"] = _stats([t["overall_peak_bytes"] for t in twins.values()])
        for act in args.activations:
            for beta in betas_for(act, args):
                per = [(results[Run(name, s, act, beta)], twins[s]) for s in args.seeds
                       if Run(name, s, act, beta) in results]  # fmt: skip
                if not per:  # --report-only: not trained yet
                    continue
                row = {
                    "saved": _stats([r["saved_bytes_mean"] / t["saved_bytes_mean"]
                                     for r, t in per]),
                    "delta": _stats([r["accuracy"] - t["accuracy"] for r, t in per]),
                    "accuracy": _stats([r["accuracy"] for r, _ in per]),
                    "kept": _stats([r["density_mean"] for r, _ in per]),
                    "seconds_per_step": _stats([r["seconds_per_step"] for r, _ in per]),
                    "seeds": [s for s in args.seeds if Run(name, s, act, beta) in results],
                }  # fmt: skip
                for col, key in (("overall", "overall_peak_bytes"), ("step_peak", "peak_bytes")):
                    if all(r.get(key) and t.get(key) for r, t in per):
                        row[col] = _stats([r[key] / t[key] for r, t in per])
                entry["rows"][f"{act} {beta:g}"] = {"activation": act, "beta": beta, **row}
        table[name] = entry
    return table


def verdict(entry: dict, act: str) -> str:
    """The issue's target for one model and activation, or the nearest point to it."""
    rows = [r for r in entry["rows"].values() if r["activation"] == act]
    ok = [r for r in rows if r["saved"]["mean"] <= 0.40 and r["delta"]["mean"] >= -0.01]
    if ok:
        return "met at beta " + ", ".join(f"{r['beta']:g}" for r in ok)
    under = [r for r in rows if r["saved"]["mean"] <= 0.40]
    if not under:
        return "not met: no beta saves 40% or less"
    best = max(under, key=lambda r: r["delta"]["mean"])
    return (f"not met; nearest: beta {best['beta']:g}, saved {_fmt(best['saved'])}%, "
            f"Δ {_fmt(best['delta'], sign=True, digits=2)} points")  # fmt: skip


def markdown(report: dict) -> str:
    """Render the report as Markdown."""
    cfg = report["config"]
    lines = [
        "# SpecNet on Fashion-MNIST 32x32: memory and accuracy relative to the spatial twins",
        "", f"Command: `{report['command']}`", "",
        f"Wall time: {report['wall_seconds']:.0f} s; preset `{cfg['preset']}`; "
        f"{report['environment']['torch']} on {report['environment']['machine']}, "
        f"{cfg['threads']} torch thread(s) per training, {cfg['jobs']} training(s) at a time.",
        "",
        f"Training (the same for every twin and SpecNet): {report['steps']} steps of "
        f"{cfg['batch']} images ({cfg['optimizer']}{' momentum 0.95' * (cfg['optimizer'] == 'sgd')}"
        f", lr {cfg['lr']}, {cfg['schedule']} schedule) from "
        f"{cfg['train_limit'] or 'all'} training images; {cfg['test_limit'] or 'all'} test "
        f"images; seeds {', '.join(map(str, cfg['seeds']))}.",
        "",
        "Columns are SpecNet / twin of the same seed, mean ± sample SD over the seeds: "
        "*saved* = bytes saved for backward (mean over steps); *overall* = parameters + "
        "optimizer state + peak of one training step (gradients, activations, transients), "
        "the paper's overall memory; *step peak* = that last term alone; *kept* = kept "
        "share of the unique spectral entries; *Δ acc* = accuracy minus the twin's, in points.",
        "",
    ]  # fmt: skip
    for entry in report["table"].values():
        kwargs = ", ".join(f"{k} {v}" for k, v in entry["kwargs"].items())
        tw = entry["twin_accuracy"]
        reach = "reaches" if tw["mean"] >= TWIN_TARGET else "does NOT reach"
        lines += [f"## {entry['label']} ({kwargs})", "",
                  f"Spatial twin (ReLU): accuracy {_fmt(tw, digits=2)}% ({reach} the 88% "
                  f"target), saved {entry['twin_saved_bytes']['mean'] / 2**20:.2f} MiB/step"
                  + (f", overall {entry['twin_overall_bytes']['mean'] / 2**20:.1f} MiB"
                     if "twin_overall_bytes" in entry else "") + ".", ""]  # fmt: skip
        if entry["rows"]:
            lines += ["| block | beta | seeds | saved (%) | overall (%) | step peak (%) "
                      "| kept (%) | Δ acc (points) | s/step |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in entry["rows"].values():
            lines.append(
                f"| {r['activation']} | {r['beta']:g} | "
                f"{', '.join(map(str, r.get('seeds', cfg['seeds'])))} | {_fmt(r['saved'])} | "
                f"{_fmt(r.get('overall'))} | {_fmt(r.get('step_peak'))} | {_fmt(r['kept'])} | "
                f"{_fmt(r['delta'], sign=True, digits=2)} | "
                f"{r['seconds_per_step']['mean']:.2f} |"
            )
        lines.append("")
        for act in dict.fromkeys(r["activation"] for r in entry["rows"].values()):
            weak = "" if tw["mean"] >= TWIN_TARGET else " (against a twin below 88%)"
            lines.append(f"Target (saved <= 40%, within 1 point), {ACT_LABELS[act]}: "
                         f"{verdict(entry, act)}{weak}.  ")  # fmt: skip
        lines.append("")
    lines += ["Paper (CIFAR-10, Table 1): SpecNet 37.0% memory at 91.8% (VGG-16) and 37.0% "
              "at 92.5% (DenseNet).", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the benchmark and write the JSON and Markdown reports."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    store = runs_dir(args)
    print(f"runs (checkpoints and results) in {store}", flush=True)
    runs = [Run(n, s) for n in args.models for s in args.seeds]
    runs += [Run(n, s, a, b) for n in args.models for a in args.activations
             for b in betas_for(a, args) for s in args.seeds]  # fmt: skip
    if args.report_only:
        # Read back the finished runs of the grid; a row averages the seeds it has.
        results = {}
        for run in runs:
            done = store / f"{run.key}.json"
            if done.exists():
                results[run] = json.loads(done.read_text())
        results = {r: v for r, v in results.items()
                   if not r.spectral or Run(r.model, r.seed) in results}  # fmt: skip
        if not results:
            raise SystemExit(f"no finished runs of this grid in {store}")
    else:
        results = train_all(runs, args, store)
    steps = next(iter(results.values()))["steps"]
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "wall_seconds": time.perf_counter() - t_start,
        "config": vars(args),
        "steps": steps,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "cpus": os.cpu_count()},
        "runs": {r.key: res for r, res in results.items()},
        "table": aggregate(results, args),
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "specnet-fashion-mnist.json").write_text(json.dumps(report, indent=1))
    (out / "specnet-fashion-mnist.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'specnet-fashion-mnist.json'} and .md in {report['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
