"""Learned masks for a pretrained model without its dataset: distillation from the dense model.

The dense model is the teacher; the student is the same weights with FCMasks
(:func:`~tvm_freq.freq.apply_`). Unlabelled photos are enough: the loss is the KL
divergence between teacher and student logits at a temperature, optionally plus
feature matching at the wrapped layers, plus ``lambda`` times the MAC-weighted FCMask
penalty. :func:`distill_masks` runs, in order:

1. **masks**: only the FCMasks learn (weights frozen); ``lambda`` is steered so the
   deployed MACs follow a plan down to the target (as ``tvm-freq train`` does);
2. **trim and round**: all FCMasks move by one common offset so the rounded masks just
   meet the target (:func:`~tvm_freq.train.trim.trim_to_target`), then they are rounded
   to 0/1 prefixes (:func:`~tvm_freq.freq.squash`). Layers whose band would not save
   MACs go back to plain convs and leave the mask file, whose layers the compiler then
   bands all (the file is marked trained), so the student computes exactly what a
   build computes;
3. **refine**: the weights learn by distillation with the masks frozen;
4. **bn** (optional): batch-norm statistics re-estimated on the training views, then the
   batch-norm scales and shifts fine-tuned (the paper's BN fine-tune).

Batch norm runs in eval mode throughout otherwise, and dropout is off: the student
matches the teacher on the same deterministic network.

Runs are checkpointed (``checkpoint_dir``) and resume from the last checkpoint.
Under ``torchrun`` each rank takes its share of every global batch and gradients are
averaged by DistributedDataParallel (:mod:`tvm_freq.train.distributed`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..band_plan import kernel_macs
from ..cost_model import resolve_cost_model
from ..freq.accounting import ModelMacs, model_macs, refresh_macs
from ..freq.apply import FreqConfig, apply_, fcmask_parameters, freq_layers, set_submodule, squash
from ..freq.export import masks_from_model
from ..freq.layer import Where
from ..freq.penalty import fcmask_penalty
from ..freq.policies import BlockSizeFn, overhead_block_size
from ..freq.transforms import block_dct
from ..masks import MaskFile
from . import distributed
from .checkpoint import save_checkpoint
from .config import check_weighting
from .optim import distill_loss, frozen_copy, trainable_parameters
from .trim import TrimResult, trim_to_target

__all__ = [
    "DistillConfig",
    "DistillStopped",
    "Agreement",
    "DistillResult",
    "distill_loss",
    "top1_agreement",
    "check_logits",
    "distill_masks",
]

PHASES = ("masks", "refine", "bn", "done")
CKPT_NAME = "distill.pt"
CKPT_VERSION = 1


@dataclass
class DistillConfig:
    """How :func:`distill_masks` learns masks.

    Parameters
    ----------
    target_reduction : float
        Whole-network MACs of the dense model over those deployed (> 1; 1.25 is 20%
        fewer MACs). Layers that would not save MACs count as dense, as the compiler
        builds them.
    block_size : int or callable, optional
        Macroblock size, or a per-layer policy; ``None`` uses
        :func:`~tvm_freq.freq.overhead_block_size` (transform overhead at most 40%).
    where : {"in", "out", "both"}
        Which channels carry FCMasks.
    temperature : float
        Softmax temperature of the KL loss (the loss is scaled by ``T**2``).
    feature_weight : float
        Weight of feature matching: the mean, over wrapped layers, of the student's
        squared error to the teacher's output there, over its variance. 0 turns it off.
    init_energy : float, optional
        Start every FCMask at the shortest zigzag prefix holding this fraction of its
        channel's coefficient energy on the first training batches (the calibration
        masks of :mod:`tvm_freq.calibrate`, measured in PyTorch), so that mask learning
        starts near a useful point; ``None`` starts every FCMask at 1 (the paper).
    lam : float
        Initial weight of the FCMask penalty.
    weighting : {"mean", "macs", "latency"}
        Penalty weighting (:func:`tvm_freq.freq.fcmask_penalty`).
    cost_model : str, optional
        With ``weighting="latency"``: a ``cost_model.json`` path or a shipped target
        key (:func:`tvm_freq.cost_model.resolve_cost_model`).
    lam_adapt : float
        After every mask step, ``lam`` is multiplied by this when the deployed MACs
        are behind the plan (a straight line to the target by ``target_at`` of the
        mask steps) and divided by it otherwise.
    target_at : float
        Share of the mask steps by which the plan reaches the target, in ``(0, 1]``.
    mask_steps, refine_steps, bn_steps : int
        Optimiser steps of each phase (``bn_steps=0`` keeps batch norm in eval mode
        with its pretrained statistics).
    mask_lr, refine_lr, bn_lr : float
        Adam learning rates of the FCMasks, the weights and the batch-norm affine
        parameters.
    batch_size : int
        Global batch (split across ranks under ``torchrun``).
    seed : int
        Fixes the batch order.
    checkpoint_dir : str, optional
        Where ``distill.pt`` is written every ``checkpoint_every`` steps and at the end
        of each phase; an existing one is resumed.
    checkpoint_every : int
        Steps between checkpoints.
    progress : bool
        Show a progress bar.
    max_steps : int, optional
        Stop after this many steps in this call (a checkpoint is written first, and
        :class:`DistillStopped` raised); call again with the same settings to resume.
    """

    target_reduction: float = 1.25
    block_size: int | BlockSizeFn | None = None
    where: Where = "in"
    temperature: float = 2.0
    feature_weight: float = 0.0
    init_energy: float | None = 0.999
    lam: float = 0.01
    weighting: str = "macs"
    cost_model: str | None = None
    lam_adapt: float = 1.05
    target_at: float = 0.7
    mask_steps: int = 200
    refine_steps: int = 100
    bn_steps: int = 0
    mask_lr: float = 0.01
    refine_lr: float = 2e-5
    bn_lr: float = 1e-4
    batch_size: int = 16
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 25
    progress: bool = True
    max_steps: int | None = None

    def __post_init__(self) -> None:
        t = self.target_reduction
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 1.0:
            raise ValueError(
                f"target_reduction must be a number >= 1 (dense MACs over pruned MACs; "
                f"1.25 is 20% fewer), got {t!r}"
            )
        if self.where not in ("in", "out", "both"):
            raise ValueError(f"where must be 'in', 'out' or 'both', got {self.where!r}")
        check_weighting(self.weighting, self.cost_model)
        for name in ("temperature", "mask_lr", "refine_lr", "bn_lr", "lam_adapt"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.lam_adapt < 1.0:
            raise ValueError(f"lam_adapt must be >= 1, got {self.lam_adapt!r}")
        if self.feature_weight < 0 or self.lam < 0:
            raise ValueError("feature_weight and lam must be >= 0")
        if self.init_energy is not None and not 0.0 < self.init_energy <= 1.0:
            raise ValueError(f"init_energy must be in (0, 1] or None, got {self.init_energy!r}")
        if not 0.0 < self.target_at <= 1.0:
            raise ValueError(f"target_at must be in (0, 1], got {self.target_at!r}")
        for name in ("mask_steps", "refine_steps", "bn_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if self.max_steps is not None and self.checkpoint_dir is None:
            raise ValueError("max_steps needs a checkpoint_dir to resume from")
        for name in ("batch_size", "checkpoint_every") + (("max_steps",) if self.max_steps else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")

    def fingerprint(self) -> dict[str, Any]:
        """The fields a resumed run must share with the checkpoint (not run control)."""
        d = asdict(self)
        for key in ("checkpoint_dir", "checkpoint_every", "progress", "max_steps"):
            d.pop(key)
        d["block_size"] = repr(self.block_size) if callable(self.block_size) else self.block_size
        return d


# Fields added after the first checkpoints were written, at their defaults.
_FINGERPRINT_DEFAULTS = {
    f.name: f.default for f in fields(DistillConfig) if f.name in ("weighting", "cost_model")
}


class DistillStopped(RuntimeError):  # noqa: N818 - a stop, not a failure
    """``max_steps`` was reached; the checkpoint holds the run so far."""

    def __init__(self, steps: int, checkpoint: Path):
        super().__init__(f"stopped after {steps} steps; run again to resume from {checkpoint}")
        self.steps = steps
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class Agreement:
    """Top-1 agreement of a student with its teacher.

    Attributes
    ----------
    matches, total : int
        Inputs where both predict the same class, and inputs seen.
    """

    matches: int
    total: int

    @property
    def rate(self) -> float:
        """``matches / total``."""
        return self.matches / self.total if self.total else math.nan


@dataclass
class DistillResult:
    """What :func:`distill_masks` returns.

    Attributes
    ----------
    student : torch.nn.Module
        The pruned model: wrapped layers in hard mode where they save MACs, plain convs
        elsewhere. :func:`tvm_freq.freq.export.export` writes its mask file, dense
        weights and ONNX graph for :func:`tvm_freq.build`.
    masks : MaskFile
        Its masks.
    macs : ModelMacs
        Its MACs (see :attr:`ModelMacs.deployed_reduction`).
    trim : TrimResult or None
        The trim before rounding.
    agreement : Agreement or None
        On the held-out images, at the end.
    agreement_rounded : Agreement or None
        On the held-out images right after rounding, before the weights were refined.
    history : list of dict
        Per-step loss, penalty weight and reduction.
    """

    student: nn.Module
    masks: MaskFile
    macs: ModelMacs
    trim: TrimResult | None
    agreement: Agreement | None
    agreement_rounded: Agreement | None
    history: list[dict[str, float]] = field(default_factory=list)


def check_logits(out: Any) -> torch.Tensor:
    """The model output if it is a logits tensor ``[N, classes]``; a clear error otherwise.

    Raises
    ------
    ValueError
        The output is not one 2-D floating-point tensor with at least 2 classes.
    """
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"distillation needs a model that returns logits [N, classes]; it returned "
            f"{type(out).__name__}"
        )
    if out.dim() != 2 or out.shape[1] < 2 or not out.is_floating_point():
        raise ValueError(
            "distillation needs a model that returns logits [N, classes]; it returned a "
            f"{out.dtype} tensor of shape {list(out.shape)}"
        )
    return out


@torch.no_grad()
def top1_agreement(
    teacher: nn.Module, student: nn.Module, images: Any, batch_size: int = 16
) -> Agreement:
    """How often ``student`` predicts the same class as ``teacher``.

    Parameters
    ----------
    teacher, student : torch.nn.Module
        Both are run in eval mode (their modes are restored after).
    images : torch.utils.data.Dataset or torch.Tensor
        Input tensors ``[3, H, W]`` (a dataset) or a batch ``[N, 3, H, W]``.
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    Agreement
    """
    modes = [(m, m.training) for net in (teacher, student) for m in net.modules()]
    teacher.eval()
    student.eval()
    matches = total = 0
    try:
        for start in range(0, len(images), batch_size):
            x = _batch_of(images, range(start, min(start + batch_size, len(images))))
            a = check_logits(teacher(x)).argmax(1)
            b = check_logits(student(x)).argmax(1)
            matches += int((a == b).sum())
            total += len(a)
    finally:
        for m, t in modes:
            m.training = t
    return Agreement(matches, total)


def _batch_of(images: Any, indices: range) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images[indices.start : indices.stop]
    return _stack(images, indices)


def _stack(dataset: Any, indices: Any) -> torch.Tensor:
    items = [dataset[int(i)] for i in indices]
    items = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
    return torch.stack(items)


class _FeatureTap:
    """Outputs of the wrapped layers (student) and of the same-named convs (teacher)."""

    def __init__(self, teacher: nn.Module, student: nn.Module, names: list[str]):
        self.t: dict[str, torch.Tensor] = {}
        self.s: dict[str, torch.Tensor] = {}
        mods_t, mods_s = dict(teacher.named_modules()), dict(student.named_modules())
        self.handles = [mods_t[n].register_forward_hook(self._hook(self.t, n)) for n in names] + [
            mods_s[n].register_forward_hook(self._hook(self.s, n)) for n in names
        ]

    @staticmethod
    def _hook(store: dict[str, torch.Tensor], name: str):
        def hook(_module, _inputs, output):
            store[name] = output

        return hook

    def loss(self) -> torch.Tensor:
        terms = [
            F.mse_loss(self.s[n], t.detach()) / (t.detach().var() + 1e-6) for n, t in self.t.items()
        ]
        self.t.clear()
        self.s.clear()
        return torch.stack(terms).mean()

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def _init_from_energy(student: nn.Module, x: torch.Tensor, energy: float) -> None:
    """Set each FCMask to the prefix holding ``energy`` of its channel's coefficient energy."""
    layers = dict(freq_layers(student))
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def tap(name: str):
        def hook(module, inputs, output):
            seen[name] = [inputs[0], F.conv2d(inputs[0], module.weight)]

        return hook

    handles = [m.register_forward_hook(tap(n)) for n, m in layers.items()]
    try:
        student(x)
    finally:
        for h in handles:
            h.remove()
    for name, layer in layers.items():
        k = layer.block_size
        for side, p in ((0, layer.fcmask_in), (1, layer.fcmask_out)):
            if p is None or not seen[name]:
                continue
            coefs = block_dct(seen[name][side], k, basis=layer.basis)  # [N, C, BH, BW, kk]
            per = coefs.pow(2).sum(dim=(0, 2, 3))  # [C, kk], zigzag order
            cum = per.cumsum(1) / per.sum(1, keepdim=True).clamp_min(1e-30)
            counts = (cum < energy - 1e-9).sum(1) + 1  # shortest prefix reaching it
            # FCMask c / k^2 rounds to exactly c kept coefficients (freq.hard_counts).
            p.copy_(counts.clamp(max=k * k).to(p.dtype) / (k * k))


def _bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _compiler_keeps(layer: Any, row: Any) -> bool:
    """Whether the compiler's default rule bands this layer with its current rounded masks.

    The rule weighs what the kernels compute (aligned band groups,
    :func:`tvm_freq.band_plan.kernel_macs`) against the dense conv.
    """
    kin, kout = layer.kept_counts()
    shape = (1, row.in_channels, *row.in_hw)
    _, lm = kernel_macs(kin, kout, layer.block_size, shape, row.out_channels)
    return lm.freq < lm.dense


def _deployed_reduction(student: nn.Module, base: ModelMacs) -> float:
    """Whole-network dense MACs over the MACs of the build: banded layers count their
    bands, layers the compiler keeps dense their dense MACs."""
    layers = dict(freq_layers(student))
    cost = base.other
    for row in refresh_macs(student, base).pointwise:
        layer = layers.get(row.name)
        banded = layer is not None and _compiler_keeps(layer, row)
        cost += row.macs.freq if banded else row.macs.dense
    return base.network_dense / cost


def _round_and_prune(student: nn.Module, base: ModelMacs) -> list[str]:
    """Squash, then unwrap the layers the compiler would keep dense; returns their names.

    The student then computes exactly what a build with its mask file computes (the file
    lists only the banded layers, marked trained).
    """
    squash(student)
    rows = {p.name: p for p in base.pointwise}
    dense = []
    for name, layer in list(freq_layers(student)):
        row = rows.get(name)
        if row is None or not _compiler_keeps(layer, row):
            set_submodule(student, name, layer.to_conv())
            dense.append(name)
    return dense


class _Distiller:
    """One run of :func:`distill_masks`: phases, steps, checkpoints."""

    def __init__(self, model: nn.Module, train: Any, cfg: DistillConfig, example: torch.Tensor):
        self.cfg = cfg
        self.train = train
        self.example = example
        self.world = distributed.init_from_env()
        self.teacher = frozen_copy(model)
        check_logits(self.teacher(example))
        self.student = copy.deepcopy(model).eval()
        block = cfg.block_size if cfg.block_size is not None else overhead_block_size()
        config = FreqConfig(block, cfg.where, True, 1.0)
        report = apply_(self.student, config, example_input=example)
        if not report.wrapped:
            raise ValueError(
                "the model has no eligible pointwise conv to prune: "
                + "; ".join(f"{s.name}: {s.reason}" for s in report.skipped[:5])
            )
        self.wrapped_names = [w.name for w in report.wrapped]
        self.base = model_macs(self.student, example)
        if cfg.init_energy is not None:
            n = min(len(train), 4 * cfg.batch_size)
            _init_from_energy(self.student, _batch_of(train, range(n)), cfg.init_energy)
        self.phase = "masks"
        self.step = 0
        self.lam = cfg.lam
        self.cost_model = None if cfg.cost_model is None else resolve_cost_model(cfg.cost_model)
        self.cost0: float | None = None
        self.dense_names: list[str] = []
        self.trim: TrimResult | None = None
        self.agreement_rounded: Agreement | None = None
        self.history: list[dict[str, float]] = []
        self.opt: torch.optim.Optimizer | None = None
        self.ddp: nn.Module | None = None
        self.tap: _FeatureTap | None = None

    # -- phases -----------------------------------------------------------------------

    def _steps(self, phase: str) -> int:
        return {"masks": self.cfg.mask_steps, "refine": self.cfg.refine_steps}.get(
            phase, self.cfg.bn_steps if phase == "bn" else 0
        )

    def _begin(self, phase: str) -> None:
        """Set up the optimiser (and DDP) of ``phase``; the model is already in its state."""
        params = trainable_parameters(self.student, phase)  # masks, refine or bn
        lr = {"masks": self.cfg.mask_lr, "refine": self.cfg.refine_lr, "bn": self.cfg.bn_lr}
        self.opt = torch.optim.Adam(params, lr=lr[phase]) if params else None
        self.ddp = distributed.wrap_ddp(self.student) if params else None
        if self.tap is not None:
            self.tap.close()
        self.tap = None
        if self.cfg.feature_weight > 0:
            names = [n for n, _ in freq_layers(self.student)]
            self.tap = _FeatureTap(self.teacher, self.student, names) if names else None

    def _finish_masks(self) -> None:
        """Trim to the target, round, drop unprofitable layers, re-count MACs."""
        cfg = self.cfg

        def deployed() -> float:
            return _deployed_reduction(self.student, self.base)

        self.trim = trim_to_target(fcmask_parameters(self.student), deployed, cfg.target_reduction)
        self.dense_names = _round_and_prune(self.student, self.base)

    def _bn_recalibrate(self) -> None:
        """Re-estimate running statistics on the training views (cumulative average)."""
        bns = _bn_modules(self.student)
        moms = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        b = self.cfg.batch_size
        n = min(len(self.train), 32 * b)
        try:
            with torch.no_grad():
                for start in range(0, n, b):
                    self.student(_batch_of(self.train, range(start, min(n, start + b))))
        finally:
            for m, mom in zip(bns, moms, strict=True):
                m.momentum = mom
                m.eval()

    # -- steps ------------------------------------------------------------------------

    def _batch(self, phase: str, step: int) -> torch.Tensor:
        """This rank's share of global batch ``step`` of ``phase`` (same on every run)."""
        b, n = self.cfg.batch_size, len(self.train)
        per_epoch = max(1, n // b)
        epoch, pos = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(
            self.cfg.seed * 1_000_003 + PHASES.index(phase) * 10_007 + epoch
        )
        order = torch.randperm(n, generator=g)
        idx = order[pos * b : (pos + 1) * b]
        (idx,) = distributed.shard_batch(idx)
        if isinstance(self.train, torch.Tensor):
            return self.train[idx]
        return _stack(self.train, idx)

    def _plan(self) -> float:
        """Planned deployed MACs over dense MACs at the current mask step."""
        assert self.cost0 is not None
        horizon = max(1.0, self.cfg.target_at * self.cfg.mask_steps)
        c1 = 1.0 / self.cfg.target_reduction
        return self.cost0 + (c1 - self.cost0) * min(1.0, self.step / horizon)

    def _train_step(self, phase: str) -> dict[str, float]:
        assert self.opt is not None and self.ddp is not None
        x = self._batch(phase, self.step)
        with torch.no_grad():
            t = self.teacher(x)
        s = check_logits(self.ddp(x))
        kd = distill_loss(s, t, self.cfg.temperature)
        # DDP averages the ranks' gradients: weight each share's mean to the global mean.
        total = kd * distributed.shard_weight(len(x), self.cfg.batch_size)
        info = {"kd": float(kd.detach())}
        if self.tap is not None:
            feat = self.tap.loss()
            total = total + self.cfg.feature_weight * feat
            info["feat"] = float(feat.detach())
        if phase == "masks" and self.lam > 0:
            penalty = fcmask_penalty(self.student, self.cfg.weighting, self.cost_model)
            total = total + self.lam * penalty
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        if phase == "masks":
            with torch.no_grad():
                for p in fcmask_parameters(self.student):
                    p.clamp_(0.0, 1.0)
            red = refresh_macs(self.student, self.base).deployed_reduction
            if self.cost0 is None:
                self.cost0 = 1.0 / red
            info.update(reduction=red, lam=self.lam)
            # Behind the plan: push harder; ahead: ease off so only unimportant bands go.
            behind = 1.0 / red > self._plan()
            self.lam *= self.cfg.lam_adapt if behind else 1.0 / self.cfg.lam_adapt
        return info

    # -- checkpoints ------------------------------------------------------------------

    def _ckpt_path(self) -> Path | None:
        d = self.cfg.checkpoint_dir
        return None if d is None else Path(d) / CKPT_NAME

    def save(self) -> None:
        path = self._ckpt_path()
        if path is None:
            return
        state = {
            "version": CKPT_VERSION,
            "config": self.cfg.fingerprint(),
            "phase": self.phase,
            "step": self.step,
            "lam": self.lam,
            "cost0": self.cost0,
            "dense_names": self.dense_names,
            "trim": None if self.trim is None else asdict(self.trim),
            "agreement_rounded": (
                None if self.agreement_rounded is None else asdict(self.agreement_rounded)
            ),
            "history": self.history,
            "student": self.student.state_dict(),
            "opt": None if self.opt is None else self.opt.state_dict(),
        }
        distributed.on_main(lambda: save_checkpoint(state, path))

    def load(self) -> bool:
        """Resume from the checkpoint if there is one; ``False`` when starting afresh."""
        path = self._ckpt_path()
        if path is None:
            return False
        # Rank 0 reads; every rank resumes from what it read.
        state = distributed.on_main(
            lambda: (
                torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None
            )
        )
        if state is None:
            return False
        if state.get("version") != CKPT_VERSION:
            raise ValueError(f"{path}: checkpoint version {state.get('version')} is not supported")
        now = self.cfg.fingerprint()
        # Fields added since a checkpoint was written count at their defaults.
        saved = _FINGERPRINT_DEFAULTS | state["config"]
        if saved != now:
            diff = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
            raise ValueError(
                f"{path} was written with a different configuration ({', '.join(diff)}); "
                "use another checkpoint_dir or the same settings"
            )
        self.phase, self.step, self.lam = state["phase"], state["step"], state["lam"]
        self.cost0, self.history = state["cost0"], state["history"]
        self.dense_names = state["dense_names"]
        self.trim = None if state["trim"] is None else TrimResult(**state["trim"])
        ar = state["agreement_rounded"]
        self.agreement_rounded = None if ar is None else Agreement(**ar)
        if self.phase != "masks":
            squash(self.student)
            layers = dict(freq_layers(self.student))
            for name in self.dense_names:
                set_submodule(self.student, name, layers[name].to_conv())
        self.student.load_state_dict(state["student"])
        if self.phase != "done":
            self._begin(self.phase)
        if self.opt is not None and state["opt"] is not None:
            self.opt.load_state_dict(state["opt"])
        return True

    # -- the run ----------------------------------------------------------------------

    def run(self, held_out: Any) -> DistillResult:
        cfg = self.cfg
        if not self.load():
            self._begin("masks")
        total = sum(self._steps(p) for p in PHASES)
        done = sum(self._steps(p) for p in PHASES[: PHASES.index(self.phase)]) + self.step
        bar = tqdm(
            total=total,
            initial=done,
            desc="distill",
            unit="step",
            dynamic_ncols=True,
            disable=not (cfg.progress and self.world.is_main),
        )
        taken = 0
        try:
            while self.phase != "done":
                phase = self.phase
                while self.step < self._steps(phase):
                    if cfg.max_steps is not None and taken >= cfg.max_steps:
                        self.save()
                        path = self._ckpt_path()
                        assert path is not None
                        raise DistillStopped(taken, path)
                    taken += 1
                    info = self._train_step(phase)
                    self.step += 1
                    self.history.append({"phase": PHASES.index(phase), **info})
                    bar.set_postfix({"phase": phase, **{k: f"{v:.4g}" for k, v in info.items()}})
                    bar.update(1)
                    if self.step % cfg.checkpoint_every == 0:
                        self.save()
                self._end_phase(phase, held_out)
                self.save()
        finally:
            bar.close()
            if self.tap is not None:
                self.tap.close()
            # The DDP wrapper holds the process group: release it here, not when a
            # traceback or a cycle that holds the distiller is collected.
            self.ddp = None
            self.opt = None
        for p in self.student.parameters():
            p.requires_grad_(False)
        self.student.eval()
        agreement = None
        if held_out is not None:
            agreement = top1_agreement(self.teacher, self.student, held_out)
        return DistillResult(
            student=self.student,
            masks=masks_from_model(self.student, self.example),
            macs=model_macs(self.student, self.example),
            trim=self.trim,
            agreement=agreement,
            agreement_rounded=self.agreement_rounded,
            history=self.history,
        )

    def _end_phase(self, phase: str, held_out: Any) -> None:
        if phase == "masks":
            self._finish_masks()
            if held_out is not None:
                self.agreement_rounded = top1_agreement(self.teacher, self.student, held_out)
        nxt = PHASES[PHASES.index(phase) + 1]
        if nxt == "bn" and self.cfg.bn_steps > 0:
            self._bn_recalibrate()
        self.phase, self.step = nxt, 0
        if nxt != "done":
            self._begin(nxt)


def distill_masks(
    model: nn.Module,
    images: Any,
    config: DistillConfig | None = None,
    *,
    held_out: Any = None,
) -> DistillResult:
    """Learn frequency-band masks for a pretrained model by distillation from itself.

    Parameters
    ----------
    model : torch.nn.Module
        A pretrained classifier returning logits ``[N, classes]``; not modified (the
        teacher and the student are copies).
    images : torch.utils.data.Dataset or torch.Tensor
        Training inputs, already preprocessed: a dataset of ``[3, H, W]`` tensors (for
        instance :class:`~tvm_freq.train.images.PhotoViews`; ``(image, label)`` pairs
        are accepted and the labels ignored) or one ``[N, 3, H, W]`` tensor.
    config : DistillConfig, optional
        Defaults to ``DistillConfig()``.
    held_out : Dataset or torch.Tensor, optional
        Inputs training never sees; top-1 agreement is measured on them after
        rounding and at the end.

    Returns
    -------
    DistillResult

    Raises
    ------
    ValueError
        No images, fewer images than one batch, a model that does not return logits,
        or a model without eligible pointwise convs.
    """
    cfg = config or DistillConfig()
    if isinstance(images, torch.Tensor) and images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {list(images.shape)}")
    if len(images) == 0:
        raise ValueError("no training images given")
    if len(images) < cfg.batch_size:
        raise ValueError(
            f"{len(images)} training images is fewer than one batch ({cfg.batch_size}); "
            "use more views or a smaller batch_size"
        )
    example = _batch_of(images, range(1))
    return _Distiller(model, images, cfg, example).run(held_out)
