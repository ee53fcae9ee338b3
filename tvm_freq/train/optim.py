"""What each phase trains and how fast: parameters, optimizer, learning rate, lambda.

:func:`trainable_parameters` sets ``requires_grad`` for a phase kind,
:func:`make_optimizer` and :func:`lr_at` give its optimizer and cosine learning rate,
:func:`train_step` takes one step on this process's share of a global batch (with
:func:`distill_loss` against a teacher's logits when asked), and :class:`LambdaControl`
sets the weight of the FCMask penalty during mask learning.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..freq import fcmask_parameters
from . import distributed
from .config import TrainConfig
from .state import RunState

__all__ = [
    "trainable_parameters",
    "make_optimizer",
    "lr_at",
    "distill_loss",
    "frozen_copy",
    "Distill",
    "train_step",
    "LambdaControl",
]


def trainable_parameters(model: nn.Module, kind: str) -> list[nn.Parameter]:
    """Set ``requires_grad`` for a phase and return the parameters it trains.

    Parameters
    ----------
    model : torch.nn.Module
        Model.
    kind : str
        Phase kind: ``masks`` trains the FCMasks, ``bn`` the batch-norm layers, every
        other kind all weights but the FCMasks.

    Returns
    -------
    list of torch.nn.Parameter
        The trained parameters.
    """
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


def _base_lr(cfg: TrainConfig, kind: str) -> float:
    return {"train": cfg.lr, "bn": cfg.bn_lr}.get(kind, cfg.refine_lr)


def make_optimizer(
    cfg: TrainConfig, kind: str, params: list[nn.Parameter]
) -> torch.optim.Optimizer:
    """The optimizer of a phase: Adam for masks, Nesterov SGD otherwise.

    Parameters
    ----------
    cfg : TrainConfig
        Learning rates, momentum and weight decay.
    kind : str
        Phase kind.
    params : list of torch.nn.Parameter
        What it trains.

    Returns
    -------
    torch.optim.Optimizer
        The optimizer.
    """
    if kind == "masks":
        return torch.optim.Adam(params, lr=cfg.mask_lr)
    wd = 0.0 if kind == "bn" else cfg.weight_decay
    return torch.optim.SGD(
        params, lr=_base_lr(cfg, kind), momentum=cfg.momentum, weight_decay=wd, nesterov=True
    )


def lr_at(cfg: TrainConfig, kind: str, step: int, total: int) -> float:
    """Learning rate of a phase's ``step``-th step of ``total``: cosine, constant for masks.

    Parameters
    ----------
    cfg : TrainConfig
        Learning rates.
    kind : str
        Phase kind.
    step, total : int
        Step within the phase, and the phase's steps.

    Returns
    -------
    float
        The learning rate.
    """
    if kind == "masks":
        return cfg.mask_lr
    return 0.5 * _base_lr(cfg, kind) * (1 + math.cos(math.pi * step / max(total, 1)))


def distill_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, batch mean.

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor
        ``[N, classes]`` logits; the teacher's carry no gradient.
    temperature : float
        Softmax temperature ``T``; the ``T**2`` keeps the gradient scale of
        cross-entropy.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    t = temperature
    log_p = F.log_softmax(student_logits / t, dim=1)
    log_q = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * t * t


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode whose parameters do not train (a teacher).

    Parameters
    ----------
    model : torch.nn.Module
        Model to copy.

    Returns
    -------
    torch.nn.Module
        The copy.
    """
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@dataclass(frozen=True)
class Distill:
    """Self-distillation of a step: a frozen teacher, the KL weight and temperature.

    Parameters
    ----------
    teacher : torch.nn.Module
        Frozen model in eval mode whose logits the student matches.
    alpha : float
        The loss is ``(1 - alpha) * cross-entropy + alpha * distill_loss``.
    temperature : float
        Softmax temperature of :func:`distill_loss`.
    """

    teacher: nn.Module
    alpha: float
    temperature: float


def train_step(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    n_global: int,
    lr: float,
    penalty: Callable[[], torch.Tensor] | None = None,
    distill: Distill | None = None,
) -> dict[str, float]:
    """One optimizer step of cross-entropy (plus a penalty) on a share of a global batch.

    Parameters
    ----------
    net : torch.nn.Module
        The model, or its DDP wrapper (which averages the gradients over the ranks).
    opt : torch.optim.Optimizer
        Optimizer; its learning rate is set to ``lr`` first.
    x, y : torch.Tensor
        This process's share of the global batch (all of it in a single process).
    n_global : int
        Examples in the global batch; shares of unequal size are weighted by
        :func:`~tvm_freq.train.distributed.shard_weight`.
    lr : float
        Learning rate of this step.
    penalty : callable, optional
        Returns a term added to the loss (the same on every rank).
    distill : Distill, optional
        Mix the cross-entropy with the KL to a teacher's logits on the same images.

    Returns
    -------
    dict
        ``loss`` (cross-entropy alone, also when distilling) and ``acc`` of the global
        batch.
    """
    for group in opt.param_groups:
        group["lr"] = lr
    net.train()
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    total = loss
    if distill is not None:
        with torch.no_grad():
            teacher_logits = distill.teacher(x)
        kd = distill_loss(logits, teacher_logits, distill.temperature)
        total = (1 - distill.alpha) * loss + distill.alpha * kd
    weight = distributed.shard_weight(len(y), n_global)
    if weight != 1.0:  # unequal shares: DDP's average must be the global batch's mean
        total = total * weight
    if penalty is not None:
        total = total + penalty()
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    if not distributed.current().distributed:
        return {"loss": float(loss.detach()), "acc": float((logits.argmax(1) == y).float().mean())}
    correct = float((logits.argmax(1) == y).sum())
    local = torch.tensor([float(loss.detach()) * len(y), correct], dtype=torch.float64)
    summed = distributed.reduce_sum(local) / n_global
    return {"loss": float(summed[0]), "acc": float(summed[1])}


class LambdaControl:
    """The weight ``lambda`` of the FCMask penalty: grown on a schedule, or steered.

    With ``target_reduction`` set and ``lam_adapt > 1`` lambda is steered towards a
    straight-line plan of the pointwise MACs (see
    :attr:`tvm_freq.train.TrainConfig.lam_adapt`); otherwise it grows by ``lam_growth``
    per mask epoch. Its state (``lam``, ``mask_cost0``, ``mask_step``) lives in the
    run's :class:`~tvm_freq.train.state.RunState`, so that checkpoints hold it; the
    methods read and update the state they are given.

    Parameters
    ----------
    cfg : TrainConfig
        Controller settings.
    reduction : callable
        Returns the pointwise MAC reduction of the model as it stands.
    """

    def __init__(self, cfg: TrainConfig, reduction: Callable[[], float]):
        self.cfg = cfg
        self.reduction = reduction

    @property
    def controlled(self) -> bool:
        """Whether lambda is steered towards the target (else grown on a schedule)."""
        return self.cfg.target_reduction is not None and self.cfg.lam_adapt > 1

    def value(self, state: RunState, kind: str, steps_per_epoch: int) -> float:
        """Lambda for the next step of a phase (0 outside mask learning).

        Parameters
        ----------
        state : RunState
            Read; its ``mask_cost0`` is set at the first controlled mask step.
        kind : str
            Phase kind.
        steps_per_epoch : int
            Steps per epoch (the growth schedule is per epoch).

        Returns
        -------
        float
            The penalty weight.
        """
        if kind != "masks":
            return 0.0
        if self.controlled:
            if state.mask_cost0 is None:  # MACs per dense MAC before any pruning
                state.mask_cost0 = 1.0 / self.reduction()
            return state.lam
        return self.cfg.lam * self.cfg.lam_growth ** (state.mask_step / steps_per_epoch)

    def steer(self, state: RunState, reduction: float, steps_per_epoch: int) -> None:
        """After a mask step: raise lambda when behind the plan, lower it when ahead.

        Parameters
        ----------
        state : RunState
            Its ``lam`` is updated.
        reduction : float
            Pointwise MAC reduction after the step.
        steps_per_epoch : int
            Steps per epoch (the plan's horizon is in epochs).
        """
        if not self.controlled:
            return
        cfg = self.cfg
        assert cfg.target_reduction is not None and state.mask_cost0 is not None
        epochs = cfg.mask_epochs if cfg.schedule == "learn-refine" else cfg.alt_cycles
        horizon = max(1.0, cfg.target_at * epochs * steps_per_epoch)
        c0, c1 = state.mask_cost0, 1.0 / cfg.target_reduction
        planned = c0 + (c1 - c0) * min(1.0, state.mask_step / horizon)
        # Behind plan: push harder; ahead: ease off so that only unimportant bands go.
        factor = cfg.lam_adapt if 1.0 / reduction > planned else 1.0 / cfg.lam_adapt
        state.lam *= factor
