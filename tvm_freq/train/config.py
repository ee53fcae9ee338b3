"""Training configuration: :class:`TrainConfig`, its command-line flags, and the phases.

:func:`add_config_flags` / :func:`config_from_args` map every field to a ``--flag``;
:func:`build_phases` turns a configuration into the :class:`Phase` list that
:func:`tvm_freq.train.run_training` runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from ..cost_model import resolve_cost_model, shipped_cost_models
from ..data import DATASETS
from ..freq import FreqConfig
from ..freq.penalty import WEIGHTINGS
from ..models import MODEL_NAMES

__all__ = [
    "SCHEDULES",
    "TrainConfig",
    "Phase",
    "build_phases",
    "add_config_flags",
    "config_from_args",
]

SCHEDULES = ("learn-refine", "alternate", "none")


@dataclass
class TrainConfig:
    """Everything :func:`run_training` needs; validated on construction.

    Parameters
    ----------
    model : str
        Zoo name (see :data:`tvm_freq.models.MODEL_NAMES`).
    width : float
        Width multiplier (MobileNetV2 only).
    dataset : {"fashion-mnist", "mnist"}
        Dataset.
    data_dir : str, optional
        Data directory (else ``$TVM_FREQ_DATA`` or the Debian location).
    train_limit, test_limit : int, optional
        Use only the first N training / test examples.
    channels : int
        Input channels (3 repeats the grey channel).
    augment : bool
        Random horizontal flips and +-2 pixel shifts during training.
    batch_size, eval_batch_size : int
        Batch sizes.
    epochs : int
        Plain training epochs (0 with ``init_from`` to start from trained weights).
    lr, momentum, weight_decay : float
        SGD for weight phases; the learning rate follows a cosine within each phase.
    init_from : str, optional
        State dict of the dense model to start from.
    schedule : {"learn-refine", "alternate", "none"}
        ``learn-refine``: masks, then refine. ``alternate``: ``alt_cycles`` of one
        masks epoch and one weights epoch, then refine. ``none``: no pruning.
    block_size : int
        Macroblock size of every wrapped layer, or the largest one when
        ``max_overhead`` is set.
    max_overhead : float, optional
        Per-layer block size: the largest ``k <= block_size`` whose unpruned DCT + IDCT
        overhead is at most this share of the layer's dense MACs
        (:func:`tvm_freq.freq.overhead_block_size`); ``None``: ``block_size`` everywhere.
    where : {"in", "out", "both"}
        Which channels carry FCMasks.
    mask_epochs : int
        Epochs of mask learning (``learn-refine``).
    mask_lr : float
        Adam learning rate of the FCMasks (clamped to [0, 1] after each step).
    lam : float
        Weight ``lambda`` of the FCMask penalty at the start of mask learning.
    lam_growth : float
        Without the ``lambda`` controller: factor by which ``lambda`` grows per mask
        epoch (continuously, per step); 1 keeps it constant as in the paper.
    lam_adapt : float
        With ``target_reduction`` set and ``lam_adapt > 1``, ``lambda`` is steered
        instead: after every mask step it is multiplied by ``lam_adapt`` when the
        pointwise MACs are above a straight-line plan from their starting value to
        the target, and divided by it otherwise. The penalty is thus never stronger
        than needed to reach the target on time, which keeps pruning selective
        (only coefficients whose loss gradient cannot hold them against the
        penalty go), without knowing the right ``lambda`` in advance.
    target_at : float
        Share of the mask-learning steps by which the plan reaches the target.
    weighting : {"mean", "macs", "latency"}
        Penalty weighting, see :func:`tvm_freq.freq.fcmask_penalty`.
    cost_model : str, optional
        With ``weighting="latency"``: the kernel cost model whose predicted times
        weight the penalty, as a ``cost_model.json`` path or a shipped target key
        (``llvm-skylake-avx512-c1``); see :func:`tvm_freq.cost_model.resolve_cost_model`.
    target_reduction : float, optional
        Stop mask learning once the pointwise MAC reduction (rounded masks,
        transform overhead included) reaches this.
    trim_to_target : bool
        With ``target_reduction`` set, before the masks are rounded for good, shift
        every FCMask by one common offset, the largest that still meets the target:
        the last mask step usually overshoots (and a phase that ran out of epochs
        falls short), and the offset hands back (or takes) exactly the coefficients
        nearest the band edges, so the final reduction lands just above the target.
    alt_cycles : int
        Cycles of the ``alternate`` schedule.
    refine_epochs : int
        Epochs of weight refinement with hard masks.
    refine_lr : float
        Peak SGD learning rate of ``weights`` and ``refine`` phases.
    bn_epochs : int
        Final epochs training only batch-norm layers.
    bn_lr : float
        SGD learning rate of the ``bn`` phase.
    self_distill : float
        Weight ``alpha`` of self-distillation in every phase after training (masks,
        weights, refine, BN): the loss is ``(1 - alpha) * cross-entropy + alpha *
        T**2 * KL`` against the logits of a frozen copy of the unpruned model as it was
        at the end of the training phase (the teacher, kept in the checkpoints). 0
        (default) trains on labels alone. Beyond the FCMask paper, which refines with
        cross-entropy only.
    distill_temperature : float
        Softmax temperature ``T`` of that KL term.
    bn_recalibrate : int
        After the masks are rounded (squash), re-estimate the batch-norm running
        statistics on this many training batches (no gradients): rounding shifts
        the activation statistics, and stale ones cost far more accuracy than the
        pruning itself. The unpruned model gets the same before it is evaluated,
        so that the comparison is fair. 0 disables.
    out_dir : str
        Checkpoints, mask file, weights and report go here.
    checkpoint_every : int
        Checkpoint every this many steps (0: only at epoch ends).
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when it exists.
    max_steps : int, optional
        Stop (with a checkpoint) once this many optimizer steps have run in total.
    num_threads : int, optional
        ``torch.set_num_threads``.
    seed : int
        Seed of initialisation, data order, augmentation and dropout.
    progress : bool
        Show tqdm progress bars.
    export_onnx : bool
        Also write the dense model as ONNX next to the mask file.
    device : str
        Torch device.
    """

    model: str = "mobilenetv2-cifar"
    width: float = 1.0
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    channels: int = 3
    augment: bool = False
    batch_size: int = 128
    eval_batch_size: int = 500
    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    init_from: str | None = None
    schedule: str = "learn-refine"
    block_size: int = 4
    max_overhead: float | None = 0.4
    where: str = "both"
    mask_epochs: int = 2
    mask_lr: float = 0.05
    lam: float = 0.01
    lam_growth: float = 1.0
    lam_adapt: float = 1.1
    target_at: float = 0.75
    weighting: str = "macs"
    cost_model: str | None = None
    target_reduction: float | None = 2.1
    trim_to_target: bool = True
    alt_cycles: int = 2
    refine_epochs: int = 2
    refine_lr: float = 0.01
    bn_epochs: int = 0
    bn_lr: float = 0.01
    self_distill: float = 0.0
    distill_temperature: float = 2.0
    bn_recalibrate: int = 20
    out_dir: str = "runs/fcmask"
    checkpoint_every: int = 50
    resume: bool = True
    max_steps: int | None = None
    num_threads: int | None = None
    seed: int = 0
    progress: bool = True
    export_onnx: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose from {', '.join(MODEL_NAMES)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check_weighting(self.weighting, self.cost_model)
        FreqConfig(self.block_size, self.where)  # validates block_size and where
        if self.max_overhead is not None and not self.max_overhead > 0:
            raise ValueError(f"max_overhead must be > 0 or None, got {self.max_overhead}")
        if not self.lam_growth > 0:
            raise ValueError(f"lam_growth must be > 0, got {self.lam_growth}")
        if not self.lam_adapt >= 1:
            raise ValueError(f"lam_adapt must be >= 1, got {self.lam_adapt}")
        if not 0 < self.target_at <= 1:
            raise ValueError(f"target_at must be in (0, 1], got {self.target_at}")
        positive = {"width": self.width, "batch_size": self.batch_size}
        positive |= {"eval_batch_size": self.eval_batch_size}
        for name, v in positive.items():
            if not v > 0:
                raise ValueError(f"{name} must be positive, got {v}")
        counts = ("epochs", "mask_epochs", "alt_cycles", "refine_epochs", "bn_epochs")
        counts += ("bn_recalibrate",)
        for name in (*counts, "checkpoint_every", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        for name in ("train_limit", "test_limit", "max_steps", "num_threads"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        for name in ("lr", "mask_lr", "refine_lr", "bn_lr", "lam", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.self_distill <= 1:
            raise ValueError(f"self_distill must be in [0, 1], got {self.self_distill}")
        if not self.distill_temperature > 0:
            raise ValueError(
                f"distill_temperature must be > 0, got {self.distill_temperature}"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.target_reduction is not None and not self.target_reduction > 0:
            raise ValueError(f"target_reduction must be > 0 or None, got {self.target_reduction}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.epochs == 0 and self.init_from is None and self.schedule != "none":
            raise ValueError("pruning an untrained model: set epochs > 0 or init_from")


@dataclass(frozen=True)
class Phase:
    """One stage of a run: ``kind`` in train/masks/weights/refine/bn, for ``epochs`` epochs."""

    kind: str
    epochs: int


def build_phases(cfg: TrainConfig) -> list[Phase]:
    """The phases :func:`run_training` will run for a configuration.

    Parameters
    ----------
    cfg : TrainConfig
        Configuration.

    Returns
    -------
    list of Phase
        In order; phases with zero epochs are left out.
    """
    phases = [Phase("train", cfg.epochs)]
    if cfg.schedule == "learn-refine":
        phases.append(Phase("masks", cfg.mask_epochs))
    elif cfg.schedule == "alternate":
        for _ in range(cfg.alt_cycles):
            phases += [Phase("masks", 1), Phase("weights", 1)]
    if cfg.schedule != "none":
        phases += [Phase("refine", cfg.refine_epochs), Phase("bn", cfg.bn_epochs)]
    return [p for p in phases if p.epochs > 0]


def _parse_value(kind: Any, text: str) -> Any:
    if text.lower() == "none":
        return None
    args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    base = args[0]
    if base is bool:
        return text.lower() in ("1", "true", "yes", "on")
    return base(text)


def _metavar(kind: Any) -> str:
    names = [getattr(a, "__name__", str(a)) for a in typing.get_args(kind)] or [kind.__name__]
    return "|".join(n.upper() if n != "NoneType" else "none" for n in names)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per :class:`TrainConfig` field (default ``None`` = not given).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Parser to extend.
    """
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                type=lambda t, k=kind: _parse_value(k, t),
                default=None,
                metavar=_metavar(kind),
                help=f"default {f.default!r}",
            )


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from ``base`` values overridden by the given flags.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed flags from :func:`add_config_flags`.
    base : dict, optional
        Preset values.

    Returns
    -------
    TrainConfig
        The validated configuration.
    """
    values = dict(base or {})
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return TrainConfig(**values)


def check_weighting(weighting: str, cost_model: str | None) -> None:
    """Validate a penalty weighting and its cost model (loaded once, to fail early).

    Parameters
    ----------
    weighting : str
        One of :data:`tvm_freq.freq.penalty.WEIGHTINGS`.
    cost_model : str, optional
        Needed by ``"latency"`` (see :class:`TrainConfig`), refused otherwise.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "latency":
        if cost_model is None:
            raise ValueError(
                "weighting='latency' needs cost_model: a cost_model.json path or a "
                f"shipped target key ({', '.join(shipped_cost_models())})"
            )
        resolve_cost_model(cost_model)
    elif cost_model is not None:
        raise ValueError(f"cost_model is used by weighting='latency' only, not {weighting!r}")
