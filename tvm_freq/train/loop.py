"""The training run: phases of plain training, mask learning, refinement and BN tuning.

:func:`run_training` runs the phases of a :class:`~tvm_freq.train.TrainConfig` and
:func:`evaluate` measures accuracy. ``_Run`` walks through phases, epochs and steps;
the pieces it uses each hold one concern: :class:`~tvm_freq.train.state.RunState`
(where the run stands), :class:`~tvm_freq.train.batches.Batches` (order, augmentation,
this process's share), :class:`~tvm_freq.train.pruning.Pruning` (wrapping, rounding,
MACs), :mod:`~tvm_freq.train.optim` (what a phase trains, learning rates, lambda),
:mod:`~tvm_freq.train.checkpoint` and :mod:`~tvm_freq.train.distributed`.

Under ``torchrun`` the run is data-parallel: every process trains on its share of each
global batch through DistributedDataParallel, rank 0 alone writes checkpoints, files
and progress bars, and every rank resumes from the checkpoint rank 0 reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from ..cost_model import resolve_cost_model
from ..data import load_dataset
from ..freq import fcmask_parameters, fcmask_penalty, model_macs
from ..freq.export import export
from ..models import get_model
from . import distributed
from .batches import Batches
from .checkpoint import CKPT_VERSION, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, build_phases
from .optim import (
    Distill,
    LambdaControl,
    frozen_copy,
    lr_at,
    make_optimizer,
    train_step,
    trainable_parameters,
)
from .pruning import Pruning, macs_summary, recalibrate_bn
from .state import RunState

__all__ = ["evaluate", "run_training", "StepCallback"]

StepCallback = Callable[[dict[str, Any]], None]
"""Called after every optimizer step with ``phase``, ``kind``, ``epoch``, ``step``,
``global_step``, ``loss`` and ``acc`` (of the global batch), and for mask steps ``red``
and ``lam``."""


def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent (eval mode, no gradients; training flags restored).

    Parameters
    ----------
    model : torch.nn.Module
        Classifier.
    dataset : torch.utils.data.TensorDataset
        ``(images, labels)``.
    batch_size : int
        Evaluation batch size.

    Returns
    -------
    float
        Accuracy in ``[0, 100]``.
    """
    x, y = dataset.tensors
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    device = next(model.parameters()).device
    modes = {m: m.training for m in model.modules()}
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for i in range(0, len(y), batch_size):
                pred = model(x[i : i + batch_size].to(device)).argmax(1).cpu()
                correct += int((pred == y[i : i + batch_size]).sum())
    finally:
        for m, t in modes.items():
            m.training = t
    return 100.0 * correct / len(y)


def _build_model(cfg: TrainConfig, device: torch.device) -> nn.Module:
    """The zoo model of ``cfg`` on ``device``, with ``init_from``'s weights (rank 0 reads)."""
    kw: dict[str, Any] = {"in_channels": cfg.channels, "num_classes": 10}
    if cfg.model.startswith("mobilenetv2"):
        kw["width_mult"] = cfg.width
    model = get_model(cfg.model, seed=cfg.seed, **kw).to(device)
    if cfg.init_from:
        path = cfg.init_from
        sd = distributed.on_main(lambda: torch.load(path, map_location=device, weights_only=True))
        model.load_state_dict(sd)
    return model.train()


def _export(model: nn.Module, example: torch.Tensor, cfg: TrainConfig) -> dict[str, Any]:
    """Rank 0 writes the mask file, dense weights and ONNX; every rank gets the paths."""
    stem = Path(cfg.out_dir) / "fcmask"
    masks, weights = stem.with_suffix(".masks.json"), stem.with_suffix(".pt")
    onnx = stem.with_suffix(".onnx") if cfg.export_onnx else None

    def write() -> None:
        export(model, masks, weights, onnx, example_input=example, model_name=cfg.model)

    distributed.on_main(write)
    paths = {"mask_file": str(masks), "state_dict": str(weights)}
    return paths | {"onnx": str(onnx) if onnx else None}


class _Run:
    """One training run: phases, epochs and steps; see :func:`run_training`."""

    def __init__(self, cfg: TrainConfig, on_step: StepCallback | None = None):
        self.cfg = cfg
        self.on_step = on_step
        self.world = distributed.current()
        self.out = Path(cfg.out_dir)
        self.ckpt_path = self.out / "checkpoint.pt"
        self.phases = build_phases(cfg)
        self.device = torch.device(cfg.device)
        kw = {"root": cfg.data_dir, "channels": cfg.channels}
        train_ds = load_dataset(cfg.dataset, "train", limit=cfg.train_limit, **kw)
        self.test_ds = load_dataset(cfg.dataset, "test", limit=cfg.test_limit, **kw)
        self.batches = Batches(train_ds, cfg.batch_size, cfg.seed, cfg.augment)
        smallest = min(cfg.batch_size, len(train_ds) % cfg.batch_size or cfg.batch_size)
        if smallest < self.world.size:
            raise ValueError(
                f"a batch of {smallest} examples leaves some of the {self.world.size} "
                "processes without any: raise batch_size or change train_limit"
            )
        self.example = train_ds.tensors[0][:1].to(self.device)
        self.model = _build_model(cfg, self.device)
        self.pruning = Pruning(
            self.model, self.example, cfg.block_size, cfg.max_overhead, cfg.where
        )
        pruning = self.pruning  # not ``self``: a closure over the run would make a cycle
        self.lam = LambdaControl(cfg, lambda: pruning.macs().pointwise_reduction)
        self.cost_model = None if cfg.cost_model is None else resolve_cost_model(cfg.cost_model)
        self.state = RunState(lam=cfg.lam)
        self.results: dict[str, Any] = {"phases": []}
        self.opt: torch.optim.Optimizer | None = None
        self.net: nn.Module | None = None  # the model, or its DDP wrapper for this phase
        # With self_distill: the unpruned model at the end of the training phase, frozen.
        self.teacher: nn.Module | None = None
        self.t0 = time.perf_counter()

    # -- phases -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            # The DDP wrapper holds the process group: release it now, not whenever the
            # run is collected (see distributed.shutdown).
            self.opt = None
            self.net = None

    def _run(self) -> dict[str, Any]:
        torch.manual_seed(self.cfg.seed)
        pending_opt = self._resume()
        while self.state.phase < len(self.phases):
            idx = self.state.phase
            if not self.state.started:
                if self.phases[idx].kind == "masks" and self.state.masks_done:
                    self._end_phase(idx, skipped=True)  # target already reached
                    continue
                self._start_phase(idx, replay=False)
                self.state.started = True
            self._prepare_training(idx, pending_opt)
            pending_opt = None
            if self._run_phase(idx):
                return self._report(interrupted=True)
            self._end_phase(idx)
        return self._finish()

    def _start_phase(self, idx: int, replay: bool) -> None:
        """Run the start-up of phase ``idx``: wrap / squash, and evaluations unless replaying."""
        kind = self.phases[idx].kind
        if kind != "train" and not self.pruning.wrapped:
            if not replay:
                # Same BN treatment as the pruned model gets, for a fair comparison.
                self._recalibrate_bn()
                self.results["accuracy_unpruned"] = self._eval()
            if self.cfg.self_distill > 0:
                # On replay these are not yet the trained weights; _resume loads them.
                self.teacher = frozen_copy(self.model)
            self.pruning.wrap()
        if kind in ("refine", "bn") and self.pruning.soft:
            # A checkpoint holds the trimmed masks and the recalibrated statistics.
            self._round_masks(replay)
            if not replay:
                self.results["accuracy_pruned_before_refine"] = self._eval()
                self.results["macs_at_squash"] = macs_summary(self.pruning.macs())

    def _prepare_training(self, idx: int, pending_opt: tuple[int, Any] | None) -> None:
        """Choose what phase ``idx`` trains; its optimizer (resumed) and DDP wrapper."""
        kind = self.phases[idx].kind
        params = trainable_parameters(self.model, kind)
        self.opt = make_optimizer(self.cfg, kind, params)
        # The checkpoint's optimizer state belongs to the phase it was saved in (it is
        # None at phase boundaries).
        if pending_opt is not None and pending_opt[0] == idx and pending_opt[1] is not None:
            self.opt.load_state_dict(pending_opt[1])
        self.net = None  # drop the last phase's wrapper and its gradient hooks first
        self.net = distributed.wrap_ddp(self.model)

    def _end_phase(self, idx: int, skipped: bool = False) -> None:
        ph = self.phases[idx]
        entry: dict[str, Any] = {"phase": idx, "kind": ph.kind, "skipped": skipped}
        entry["global_step"] = self.state.global_step
        if self.pruning.wrapped:
            entry["pointwise_reduction"] = self.pruning.macs().pointwise_reduction
        if ph.kind == "masks":
            entry["lam"] = self.lam.value(self.state, "masks", 1) if not skipped else None
        self.results["phases"].append(entry)
        self.state.next_phase()
        self.opt = None
        self.net = None
        self._save()

    # -- epochs and steps -------------------------------------------------------------

    def _run_phase(self, idx: int) -> bool:
        """Train phase ``idx`` from where the state stands; True when ``max_steps`` hit."""
        ph, cfg = self.phases[idx], self.cfg
        steps_per_epoch = self.batches.steps_per_epoch
        # A started mask phase with the target reached was interrupted right at the end.
        stop = ph.kind == "masks" and self.state.masks_done
        while self.state.epoch < ph.epochs and not stop:
            bar = tqdm(
                total=steps_per_epoch,
                initial=self.state.step,
                desc=f"{ph.kind} {self.state.epoch + 1}/{ph.epochs}",
                disable=not (cfg.progress and self.world.is_main),
                leave=False,
            )
            try:
                while self.state.step < steps_per_epoch:
                    info = self._train_step(idx)
                    bar.update(1)
                    bar.set_postfix(info)
                    stop = ph.kind == "masks" and self.state.masks_done
                    g = self.state.global_step
                    if cfg.max_steps is not None and g >= cfg.max_steps:
                        self._save()
                        return True
                    if stop:
                        break
                    if cfg.checkpoint_every and g % cfg.checkpoint_every == 0:
                        self._save()
            finally:
                bar.close()
            if not stop:
                self.state.next_epoch()
                self._save()
        return False

    def _train_step(self, idx: int) -> dict[str, float]:
        """Take the step the state points at and move the state past it."""
        kind, cfg, s = self.phases[idx].kind, self.cfg, self.state
        steps_per_epoch = self.batches.steps_per_epoch
        where = {"phase": idx, "kind": kind, "epoch": s.epoch, "step": s.step}
        x, y, n_global = self.batches.local_batch(idx, s.epoch, s.step)
        total = self.phases[idx].epochs * steps_per_epoch
        lr = lr_at(cfg, kind, s.epoch * steps_per_epoch + s.step, total)
        lam = self.lam.value(s, kind, steps_per_epoch)
        info = self._step(kind, x.to(self.device), y.to(self.device), n_global, lr, lam)
        if kind == "masks":
            self.lam.steer(s, info["red"], steps_per_epoch)
        s.step += 1
        s.global_step += 1
        if kind == "masks" and cfg.target_reduction is not None:
            if info["red"] >= cfg.target_reduction:
                s.masks_done = True
        if self.on_step is not None:
            self.on_step(where | {"global_step": s.global_step} | info)
        return info

    def _step(
        self, kind: str, x: torch.Tensor, y: torch.Tensor, n_global: int, lr: float, lam: float
    ) -> dict[str, float]:
        """One optimizer step on this process's share ``x, y`` of a global batch."""
        assert self.opt is not None and self.net is not None
        model, weighting, costs = self.model, self.cfg.weighting, self.cost_model
        masks = kind == "masks" and lam > 0
        penalty = (lambda: lam * fcmask_penalty(model, weighting, costs)) if masks else None
        distill = None
        if self.teacher is not None and kind != "train":
            distill = Distill(self.teacher, self.cfg.self_distill, self.cfg.distill_temperature)
        info = train_step(self.net, self.opt, x, y, n_global, lr, penalty, distill)
        if kind == "masks":
            with torch.no_grad():
                for p in fcmask_parameters(self.model):
                    p.clamp_(0.0, 1.0)  # beyond [0, 1] FCMask only delays its way back
            info["red"] = self.pruning.macs().pointwise_reduction
            info["lam"] = lam
            self.state.mask_step += 1
        return info

    # -- model treatments -------------------------------------------------------------

    def _round_masks(self, replay: bool) -> None:
        """Trim the soft masks to the target, round them, re-estimate BN (not on replay)."""
        cfg = self.cfg
        if not replay and cfg.target_reduction is not None and cfg.trim_to_target:
            trim = self.pruning.trim_to_target(cfg.target_reduction)
            if trim is not None:
                self.results["trim"] = trim
        self.pruning.round_masks()
        if not replay:
            self._recalibrate_bn()

    def _recalibrate_bn(self) -> None:
        if self.cfg.bn_recalibrate:
            recalibrate_bn(self.model, self.batches.recalibration(self.cfg.bn_recalibrate))

    def _eval(self) -> float:
        return evaluate(self.model, self.test_ds, self.cfg.eval_batch_size)

    # -- checkpoints ------------------------------------------------------------------

    def _save(self) -> None:
        """Rank 0 writes a checkpoint; every rank waits for it."""
        self.state.elapsed += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        distributed.on_main(lambda: save_checkpoint(self._checkpoint(), self.ckpt_path))

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "version": CKPT_VERSION,
            "config": asdict(self.cfg),
            "state": self.state.to_dict(),
            "results": self.results,
            "model": self.model.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "optimizer": self.opt.state_dict() if self.opt is not None else None,
            "rng": rng_state(),
        }

    def _resume(self) -> tuple[int, Any] | None:
        """Load the checkpoint rank 0 reads, if any; its phase and optimizer state."""
        path, cfg, device = self.ckpt_path, self.cfg, self.device
        ckpt = distributed.on_main(lambda: read_checkpoint(path, cfg, device))
        if ckpt is None:
            return None
        self.state, self.results = RunState.from_dict(ckpt["state"]), ckpt["results"]
        # Rebuild the model's structure as it was, then load the weights into it.
        for i in range(self.state.phase + (1 if self.state.started else 0)):
            if i < len(self.phases):
                self._start_phase(i, replay=True)
        self.model.load_state_dict(ckpt["model"])
        if self.teacher is not None:  # same self_distill as the checkpoint's (checked)
            self.teacher.load_state_dict(ckpt["teacher"])
        set_rng_state(ckpt["rng"])
        return self.state.phase, ckpt["optimizer"]

    # -- the end ----------------------------------------------------------------------

    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.schedule == "none" or not self.pruning.wrapped:
            self._recalibrate_bn()
            self.results["accuracy_unpruned"] = self._eval()
            if cfg.schedule == "none":
                return self._report(interrupted=False)
            self.pruning.wrap()  # e.g. zero mask epochs and no refine: still report masks
        if self.pruning.soft:
            self._round_masks(replay=False)
        self.results["accuracy_pruned"] = self._eval()
        # Without a refine / bn phase, "before refinement" is the final model.
        self.results.setdefault("accuracy_pruned_before_refine", self.results["accuracy_pruned"])
        self.results.update(_export(self.model, self.example, self.cfg))
        unpruned = model_macs(self.model, self.example, unpruned=True)
        self.results["macs"] = macs_summary(self.pruning.macs(), unpruned)
        report = self._report(interrupted=False)
        text = json.dumps(report, indent=2) + "\n"
        distributed.on_main(lambda: (self.out / "report.json").write_text(text))
        return report

    def _report(self, interrupted: bool) -> dict[str, Any]:
        r = dict(self.results)
        if "accuracy_unpruned" in r and "accuracy_pruned" in r:
            r["accuracy_drop"] = r["accuracy_unpruned"] - r["accuracy_pruned"]
        r.update(
            interrupted=interrupted,
            global_step=self.state.global_step,
            wall_time_s=self.state.elapsed + time.perf_counter() - self.t0,
            checkpoint=str(self.ckpt_path),
            config=asdict(self.cfg),
        )
        return r


def run_training(cfg: TrainConfig, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train, learn band masks, refine, export; resumable, data-parallel under torchrun.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) it joins the process
    group (:func:`tvm_freq.train.distributed.init_from_env`, gloo) and trains with
    DistributedDataParallel, each rank on its share of every batch of ``batch_size``
    (the *global* batch size); rank 0 writes the checkpoints and files, and every rank
    returns the same report.

    Parameters
    ----------
    cfg : TrainConfig
        The run: model, data, phases, checkpoints.
    on_step : callable, optional
        Called on every rank after every step (see :data:`StepCallback`).

    Returns
    -------
    dict
        Report: ``accuracy_unpruned``, ``accuracy_pruned_before_refine``,
        ``accuracy_pruned``, ``accuracy_drop`` (points), ``macs`` (pointwise MACs dense
        and pruned, reduction with transform overhead included, whole-network MACs),
        ``mask_file``, ``state_dict``, ``phases``, ``global_step``, ``wall_time_s`` and
        ``interrupted`` (True when ``max_steps`` stopped the run; rerun to resume).
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"expected a TrainConfig, got {type(cfg).__name__}")
    distributed.init_from_env()
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _Run(cfg, on_step).run()
    finally:
        torch.set_num_threads(threads)  # leave the caller's setting as it was
