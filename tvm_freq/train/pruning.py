"""The frequency structure of the model in training: wrapping, rounding, MACs, BN.

:class:`Pruning` wraps the model's pointwise convs in block DCTs with FCMasks, counts
their MACs, trims the soft masks to the target and rounds them (squash);
:func:`recalibrate_bn` re-estimates the batch-norm statistics after the rounding;
:func:`macs_summary` is the report's MAC section.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..freq import (
    FreqConfig,
    ModelMacs,
    apply_,
    fcmask_parameters,
    freq_layers,
    model_macs,
    overhead_block_size,
    refresh_macs,
    squash,
)
from .trim import trim_to_target

__all__ = ["Pruning", "recalibrate_bn", "macs_summary"]


class Pruning:
    """The model's frequency-domain layers and their MAC count.

    Parameters
    ----------
    model : torch.nn.Module
        The model in training (modified in place).
    example : torch.Tensor
        One input, for tracing and MAC counts.
    block_size : int
        Macroblock size, or the largest one when ``max_overhead`` is set.
    max_overhead : float, optional
        See :attr:`tvm_freq.train.TrainConfig.max_overhead`.
    where : str
        Which channels carry FCMasks.
    """

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        block_size: int,
        max_overhead: float | None,
        where: str,
    ):
        self.model = model
        self.example = example
        self.block_size = block_size
        self.max_overhead = max_overhead
        self.where = where
        self._base: ModelMacs | None = None

    @property
    def wrapped(self) -> bool:
        """Whether the pointwise convs are wrapped yet."""
        return any(True for _ in freq_layers(self.model))

    @property
    def soft(self) -> bool:
        """Whether any wrapped layer still has soft (learnable) masks."""
        return any(m.mode == "soft" for _, m in freq_layers(self.model))

    def wrap(self) -> None:
        """Wrap the eligible pointwise convs, with FCMasks, on the example's device."""
        k: Any = self.block_size
        if self.max_overhead is not None:
            k = overhead_block_size(self.max_overhead, self.block_size)
        apply_(self.model, FreqConfig(k, self.where), example_input=self.example)
        self.model.to(self.example.device)
        self._base = model_macs(self.model, self.example)

    def macs(self) -> ModelMacs:
        """MACs of the model as its masks stand now (rounded).

        Returns
        -------
        ModelMacs
            Dense and pruned MACs.
        """
        if self._base is None:
            self._base = model_macs(self.model, self.example)
        return refresh_macs(self.model, self._base)

    def round_masks(self) -> None:
        """Round the soft masks to 0/1 prefixes for good (:func:`tvm_freq.freq.squash`)."""
        squash(self.model)

    def trim_to_target(self, target: float) -> dict[str, float] | None:
        """Shift all FCMasks by the largest common offset that still meets ``target``.

        See :func:`tvm_freq.train.trim.trim_to_target`.

        Parameters
        ----------
        target : float
            Pointwise MAC reduction to reach.

        Returns
        -------
        dict or None
            ``offset``, ``reduction_before`` and ``reduction``; ``None`` (masks left as
            they were) when even masks at 0 do not reach the target.
        """
        trim = trim_to_target(
            fcmask_parameters(self.model), lambda: self.macs().pointwise_reduction, target
        )
        if not trim.reached:
            return None
        return {k: getattr(trim, k) for k in ("offset", "reduction_before", "reduction")}


def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate BN running statistics on some batches, without gradients.

    Every other module is in eval mode meanwhile (no dropout: the global RNG is not
    touched); momenta and training flags are restored afterwards.

    Parameters
    ----------
    model : torch.nn.Module
        Model (on its device).
    batches : iterable of torch.Tensor
        Input batches; not consumed when the model has no batch-norm layers.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    device = next(model.parameters()).device
    momenta = [m.momentum for m in bns]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    try:
        with torch.no_grad():
            for x in batches:
                model(x.to(device))
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        for m, t in modes.items():
            m.training = t


def macs_summary(m: ModelMacs, unpruned: ModelMacs | None = None) -> dict[str, Any]:
    """The report's MAC section.

    Parameters
    ----------
    m : ModelMacs
        MACs of the pruned model.
    unpruned : ModelMacs, optional
        MACs of the wrapped model with every coefficient kept.

    Returns
    -------
    dict
        Pointwise and whole-network MACs, dense and pruned, and their reductions.
    """
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
