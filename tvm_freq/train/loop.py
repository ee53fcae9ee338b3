"""The training run: phases of plain training, mask learning, refinement and BN tuning.

:func:`run_training` runs the phases of a :class:`~tvm_freq.train.TrainConfig`
(``_Run`` holds the state of one run) and :func:`evaluate` measures accuracy. Batch
order and augmentation are pure functions of ``(seed, phase, epoch, step)``, so a
resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from ..data import load_dataset
from ..freq import (
    FreqConfig,
    ModelMacs,
    apply_,
    fcmask_parameters,
    fcmask_penalty,
    freq_layers,
    model_macs,
    overhead_block_size,
    refresh_macs,
    squash,
)
from ..freq.export import export
from ..models import get_model
from .checkpoint import (
    CKPT_VERSION,
    check_compatible,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, build_phases

__all__ = ["evaluate", "run_training"]


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


# --------------------------------------------------------------------------- internals


def _seed_for(*parts: int) -> int:
    h = 0x9E3779B9
    for p in parts:
        h = (h * 1_000_003 + int(p) + 1) % (2**63 - 1)
    return h


def _epoch_order(cfg: TrainConfig, phase: int, epoch: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(_seed_for(cfg.seed, phase, epoch))
    return torch.randperm(n, generator=g)


def _augment(x: torch.Tensor, seed: int) -> torch.Tensor:
    # Flip and shift with a generator of its own, so resuming needs no RNG replay.
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    h, w = x.shape[2:]
    padded = F.pad(x, (2, 2, 2, 2), value=float(x.amin()))
    out = torch.empty_like(x)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            if sel.any():
                out[sel] = padded[sel, :, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    return out


def _freeze(model: nn.Module, kind: str) -> list[nn.Parameter]:
    """Set requires_grad for a phase and return the parameters it trains."""
    masks = {id(p) for p in fcmask_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(False)
    if kind == "masks":
        trainable = [p for p in model.parameters() if id(p) in masks]
    elif kind == "bn":
        trainable = [
            p
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)
        ]
    else:
        trainable = [p for p in model.parameters() if id(p) not in masks]
    for p in trainable:
        p.requires_grad_(True)
    return trainable


def _optimizer(cfg: TrainConfig, kind: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if kind == "masks":
        return torch.optim.Adam(params, lr=cfg.mask_lr)
    lr = {"train": cfg.lr, "bn": cfg.bn_lr}.get(kind, cfg.refine_lr)
    wd = 0.0 if kind == "bn" else cfg.weight_decay
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd, nesterov=True)


def _lr_at(cfg: TrainConfig, kind: str, step: int, total: int) -> float:
    if kind == "masks":
        return cfg.mask_lr
    base = {"train": cfg.lr, "bn": cfg.bn_lr}.get(kind, cfg.refine_lr)
    return 0.5 * base * (1 + math.cos(math.pi * step / max(total, 1)))


def _macs_summary(m: ModelMacs, unpruned: ModelMacs | None = None) -> dict[str, Any]:
    out = {
        "pointwise_macs_dense": m.pointwise_dense,
        "pointwise_macs_pruned": m.pointwise_freq,
        "pointwise_reduction": m.pointwise_reduction,
        "transform_overhead_macs": m.transform_overhead,
        "network_macs_dense": m.network_dense,
        "network_macs_pruned": m.network_freq,
        "network_reduction": m.network_reduction,
    }
    if unpruned is not None:
        out["pointwise_macs_unpruned_freq"] = unpruned.pointwise_freq
        out["transform_overhead_unpruned"] = unpruned.transform_overhead / unpruned.pointwise_dense
    return out


class _Run:
    """State of one training run; see :func:`run_training`."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.ckpt_path = self.out / "checkpoint.pt"
        self.phases = build_phases(cfg)
        self.device = torch.device(cfg.device)
        kw = {"root": cfg.data_dir, "channels": cfg.channels}
        self.train_ds = load_dataset(cfg.dataset, "train", limit=cfg.train_limit, **kw)
        self.test_ds = load_dataset(cfg.dataset, "test", limit=cfg.test_limit, **kw)
        self.example = self.train_ds.tensors[0][:1].to(self.device)
        model_kw: dict[str, Any] = {"in_channels": cfg.channels, "num_classes": 10}
        if cfg.model.startswith("mobilenetv2"):
            model_kw["width_mult"] = cfg.width
        self.model = get_model(cfg.model, seed=cfg.seed, **model_kw).to(self.device)
        if cfg.init_from:
            sd = torch.load(cfg.init_from, map_location=self.device, weights_only=True)
            self.model.load_state_dict(sd)
        self.model.train()
        # Progress through the phases: phase index, whether its start-up ran, epoch, step.
        self.state: dict[str, Any] = {
            "phase": 0,
            "started": False,
            "epoch": 0,
            "step": 0,
            "global_step": 0,
            "elapsed": 0.0,
            "masks_done": False,
            "mask_step": 0,
            "lam": cfg.lam,
            "mask_cost0": None,
        }
        self.results: dict[str, Any] = {"phases": []}
        self.opt: torch.optim.Optimizer | None = None
        self.base_macs: ModelMacs | None = None
        self.t0 = time.perf_counter()

    # -- structure --------------------------------------------------------------------

    def _wrapped(self) -> bool:
        return any(True for _ in freq_layers(self.model))

    def _wrap(self) -> None:
        cfg = self.cfg
        k: Any = cfg.block_size
        if cfg.max_overhead is not None:
            k = overhead_block_size(cfg.max_overhead, cfg.block_size)
        apply_(self.model, FreqConfig(k, cfg.where), example_input=self.example)
        self.model.to(self.device)
        self.base_macs = model_macs(self.model, self.example)

    def _start_phase(self, idx: int, replay: bool) -> None:
        """Run the start-up of phase ``idx``: wrap / squash, and evaluations unless replaying."""
        kind = self.phases[idx].kind
        if kind != "train" and not self._wrapped():
            if not replay:
                # Same BN treatment as the pruned model gets, for a fair comparison.
                self._recalibrate_bn()
                self.results["accuracy_unpruned"] = self._eval()
            self._wrap()
        if kind in ("refine", "bn") and self._soft():
            if not replay:  # a checkpoint holds the trimmed masks
                self._trim_to_target()
            squash(self.model)
            if not replay:  # a checkpoint holds the recalibrated statistics
                self._recalibrate_bn()
                self.results["accuracy_pruned_before_refine"] = self._eval()
                self.results["macs_at_squash"] = _macs_summary(self._macs())

    def _trim_to_target(self) -> None:
        """Shift all FCMasks by the largest common offset that still meets the target."""
        cfg = self.cfg
        if cfg.target_reduction is None or not cfg.trim_to_target:
            return
        params = fcmask_parameters(self.model)
        orig = [p.detach().clone() for p in params]

        def reduction_at(delta: float) -> float:
            with torch.no_grad():
                for p, o in zip(params, orig, strict=True):
                    p.copy_((o + delta).clamp_(0.0, 1.0))
            return self._macs().pointwise_reduction

        before = reduction_at(0.0)
        lo, hi = -1.0, 1.0  # counts grow with the offset, so the reduction falls with it
        if reduction_at(lo) < cfg.target_reduction:
            reduction_at(0.0)  # unreachable even with every mask at 0: leave them be
            return
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if reduction_at(mid) >= cfg.target_reduction:
                lo = mid
            else:
                hi = mid
        after = reduction_at(lo)
        self.results["trim"] = {"offset": lo, "reduction_before": before, "reduction": after}

    def _soft(self) -> bool:
        return any(m.mode == "soft" for _, m in freq_layers(self.model))

    def _recalibrate_bn(self) -> None:
        """Re-estimate BN running statistics on training batches, without gradients."""
        cfg = self.cfg
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns or cfg.bn_recalibrate == 0:
            return
        x_all = self.train_ds.tensors[0]
        # Its own fixed order, and no dropout: the global RNG is not touched.
        order = _epoch_order(cfg, 10_000, 0, len(x_all))
        momenta = [m.momentum for m in bns]
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        try:
            with torch.no_grad():
                for i in range(cfg.bn_recalibrate):
                    sel = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                    if len(sel) == 0:
                        break
                    self.model(x_all[sel].to(self.device))
        finally:
            for m, mom in zip(bns, momenta, strict=True):
                m.momentum = mom
            for m, t in modes.items():
                m.training = t

    def _macs(self) -> ModelMacs:
        if self.base_macs is None:
            self.base_macs = model_macs(self.model, self.example)
        return refresh_macs(self.model, self.base_macs)

    def _eval(self) -> float:
        return evaluate(self.model, self.test_ds, self.cfg.eval_batch_size)

    # -- checkpoints ------------------------------------------------------------------

    def _save(self) -> None:
        self.state["elapsed"] += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        save_checkpoint(
            {
                "version": CKPT_VERSION,
                "config": asdict(self.cfg),
                "state": dict(self.state),
                "results": self.results,
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict() if self.opt is not None else None,
                "rng": rng_state(),
            },
            self.ckpt_path,
        )

    def _load(self) -> dict[str, Any] | None:
        if not (self.cfg.resume and self.ckpt_path.is_file()):
            return None
        # Our own file: it holds RNG states (numpy tuples), so not weights_only.
        ckpt = torch.load(self.ckpt_path, map_location=self.device, weights_only=False)
        if ckpt.get("version") != CKPT_VERSION:
            raise ValueError(
                f"{self.ckpt_path}: unsupported checkpoint version {ckpt.get('version')}"
            )
        check_compatible(ckpt["config"], self.cfg)
        self.state, self.results = dict(ckpt["state"]), ckpt["results"]
        # Rebuild the model's structure as it was, then load the weights into it.
        for i in range(self.state["phase"] + (1 if self.state["started"] else 0)):
            if i < len(self.phases):
                self._start_phase(i, replay=True)
        self.model.load_state_dict(ckpt["model"])
        set_rng_state(ckpt["rng"])
        return ckpt

    # -- loop -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        ckpt = self._load()
        # The checkpoint's optimizer state belongs to the phase it was saved in (it is
        # None at phase boundaries).
        pending_opt = (ckpt["state"]["phase"], ckpt["optimizer"]) if ckpt else (None, None)
        n = len(self.train_ds)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        x_all, y_all = self.train_ds.tensors
        while self.state["phase"] < len(self.phases):
            idx = self.state["phase"]
            ph = self.phases[idx]
            if not self.state["started"]:
                if ph.kind == "masks" and self.state["masks_done"]:
                    self._end_phase(idx, skipped=True)  # target already reached
                    continue
                self._start_phase(idx, replay=False)
                self.state["started"] = True
            params = _freeze(self.model, ph.kind)
            self.opt = _optimizer(cfg, ph.kind, params)
            if pending_opt[0] == idx and pending_opt[1] is not None:
                self.opt.load_state_dict(pending_opt[1])
            pending_opt = (None, None)
            total = ph.epochs * steps_per_epoch
            # A started mask phase with the target reached was interrupted right at the end.
            stop = ph.kind == "masks" and self.state["masks_done"]
            while self.state["epoch"] < ph.epochs and not stop:
                epoch = self.state["epoch"]
                order = _epoch_order(cfg, idx, epoch, n)
                bar = tqdm(
                    total=steps_per_epoch,
                    initial=self.state["step"],
                    desc=f"{ph.kind} {epoch + 1}/{ph.epochs}",
                    disable=not cfg.progress,
                    leave=False,
                )
                while self.state["step"] < steps_per_epoch:
                    s = self.state["step"]
                    sel = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                    x, y = x_all[sel], y_all[sel]
                    if cfg.augment:
                        x = _augment(x, _seed_for(cfg.seed, idx, epoch, s, 7))
                    lr = _lr_at(cfg, ph.kind, epoch * steps_per_epoch + s, total)
                    lam = self._lam(ph.kind, steps_per_epoch)
                    info = self._step(ph.kind, x.to(self.device), y.to(self.device), lr, lam)
                    if ph.kind == "masks":
                        self._steer_lam(info["red"], steps_per_epoch)
                    self.state["step"] += 1
                    self.state["global_step"] += 1
                    bar.update(1)
                    bar.set_postfix(info)
                    g = self.state["global_step"]
                    if ph.kind == "masks" and cfg.target_reduction is not None:
                        if info["red"] >= cfg.target_reduction:
                            self.state["masks_done"] = True
                            stop = True
                    if cfg.max_steps is not None and g >= cfg.max_steps:
                        bar.close()
                        self._save()
                        return self._report(interrupted=True)
                    if stop:
                        break
                    if cfg.checkpoint_every and g % cfg.checkpoint_every == 0:
                        self._save()
                bar.close()
                if not stop:
                    self.state["epoch"] += 1
                    self.state["step"] = 0
                    self._save()
            self._end_phase(idx)
        return self._finish()

    def _controlled(self) -> bool:
        return self.cfg.target_reduction is not None and self.cfg.lam_adapt > 1

    def _lam(self, kind: str, steps_per_epoch: int) -> float:
        if kind != "masks":
            return 0.0
        if self._controlled():
            if self.state["mask_cost0"] is None:  # MACs per dense MAC before any pruning
                self.state["mask_cost0"] = 1.0 / self._macs().pointwise_reduction
            return self.state["lam"]
        return self.cfg.lam * self.cfg.lam_growth ** (self.state["mask_step"] / steps_per_epoch)

    def _steer_lam(self, reduction: float, steps_per_epoch: int) -> None:
        if not self._controlled():
            return
        cfg = self.cfg
        epochs = cfg.mask_epochs if cfg.schedule == "learn-refine" else cfg.alt_cycles
        horizon = max(1.0, cfg.target_at * epochs * steps_per_epoch)
        c0, c1 = self.state["mask_cost0"], 1.0 / cfg.target_reduction
        planned = c0 + (c1 - c0) * min(1.0, self.state["mask_step"] / horizon)
        # Behind plan: push harder; ahead: ease off so that only unimportant bands go.
        factor = cfg.lam_adapt if 1.0 / reduction > planned else 1.0 / cfg.lam_adapt
        self.state["lam"] *= factor

    def _step(
        self, kind: str, x: torch.Tensor, y: torch.Tensor, lr: float, lam: float
    ) -> dict[str, float]:
        assert self.opt is not None
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.model.train()
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        total = loss
        if kind == "masks" and lam > 0:
            total = loss + lam * fcmask_penalty(self.model, self.cfg.weighting)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        info = {"loss": float(loss.detach()), "acc": float((logits.argmax(1) == y).float().mean())}
        if kind == "masks":
            with torch.no_grad():
                for p in fcmask_parameters(self.model):
                    p.clamp_(0.0, 1.0)  # beyond [0, 1] FCMask only delays its way back
            info["red"] = self._macs().pointwise_reduction
            info["lam"] = lam
            self.state["mask_step"] += 1
        return info

    def _end_phase(self, idx: int, skipped: bool = False) -> None:
        ph = self.phases[idx]
        entry: dict[str, Any] = {"phase": idx, "kind": ph.kind, "skipped": skipped}
        entry["global_step"] = self.state["global_step"]
        if self._wrapped():
            entry["pointwise_reduction"] = self._macs().pointwise_reduction
        if ph.kind == "masks":
            entry["lam"] = self._lam("masks", 1) if not skipped else None
        self.results["phases"].append(entry)
        self.state.update(phase=idx + 1, started=False, epoch=0, step=0)
        self.opt = None
        self._save()

    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.cfg.schedule == "none" or not self._wrapped():
            self._recalibrate_bn()
            self.results["accuracy_unpruned"] = self._eval()
            if self.cfg.schedule == "none":
                return self._report(interrupted=False)
            self._wrap()  # e.g. zero mask epochs and no refine: still report masks
        if self._soft():
            self._trim_to_target()
            squash(self.model)
            self._recalibrate_bn()
        self.results["accuracy_pruned"] = self._eval()
        # Without a refine / bn phase, "before refinement" is the final model.
        self.results.setdefault("accuracy_pruned_before_refine", self.results["accuracy_pruned"])
        stem = self.out / "fcmask"
        onnx = stem.with_suffix(".onnx") if cfg.export_onnx else None
        export(
            self.model,
            stem.with_suffix(".masks.json"),
            stem.with_suffix(".pt"),
            onnx,
            example_input=self.example,
            model_name=cfg.model,
        )
        self.results["mask_file"] = str(stem.with_suffix(".masks.json"))
        self.results["state_dict"] = str(stem.with_suffix(".pt"))
        self.results["onnx"] = str(onnx) if onnx else None
        unpruned = model_macs(self.model, self.example, unpruned=True)
        self.results["macs"] = _macs_summary(self._macs(), unpruned)
        report = self._report(interrupted=False)
        (self.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report

    def _report(self, interrupted: bool) -> dict[str, Any]:
        r = dict(self.results)
        if "accuracy_unpruned" in r and "accuracy_pruned" in r:
            r["accuracy_drop"] = r["accuracy_unpruned"] - r["accuracy_pruned"]
        r.update(
            interrupted=interrupted,
            global_step=self.state["global_step"],
            wall_time_s=self.state["elapsed"] + time.perf_counter() - self.t0,
            checkpoint=str(self.ckpt_path),
            config=asdict(self.cfg),
        )
        return r


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Train, learn band masks, refine, export; resumable.

    Parameters
    ----------
    cfg : TrainConfig
        Configuration.

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
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _Run(cfg).run()
    finally:
        torch.set_num_threads(threads)  # leave the caller's setting as it was
