"""The FCMask regulariser (paper section 3.3): :func:`fcmask_penalty`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..cost_model import KernelCostModel
from ..macs import unpruned_macs
from .apply import freq_layers
from .layer import FreqPointwiseConv2d

__all__ = ["WEIGHTINGS", "fcmask_penalty"]

#: The penalty weightings :func:`fcmask_penalty` accepts.
WEIGHTINGS = ("mean", "macs", "latency")


def _mask_groups(model: nn.Module) -> list[tuple[FreqPointwiseConv2d, nn.Parameter, str]]:
    groups = []
    for _, layer in freq_layers(model):
        for side, p in (("in", layer.fcmask_in), ("out", layer.fcmask_out)):
            if p is not None and layer.mode == "soft":
                groups.append((layer, p, side))
    return groups


def fcmask_penalty(
    model: nn.Module,
    weighting: Literal["mean", "macs", "latency"] = "mean",
    cost_model: KernelCostModel | None = None,
) -> torch.Tensor:
    """FCMask regulariser: ``sum over layers of mean(|FCMask_l|)`` (paper section 3.3).

    Every learned mask vector (a layer's input side and output side count
    separately) adds ``w_g * mean(|FCMask_g|)``.

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model; layers in hard or fixed mode are ignored.
    weighting : {"mean", "macs", "latency"}
        ``"mean"``: ``w_g = 1`` (the paper). ``"macs"``: ``w_g`` proportional to the
        MACs the group's coefficients cost when all are kept (DCT or IDCT plus the
        GEMM work they feed). ``"latency"``: proportional to the time ``cost_model``
        predicts for that same work in the compiled fused kernel, each kind of MAC at
        its own measured cost (a transform MAC costs 1.6-1.8x a GEMM MAC on the
        shipped one-thread model), so pruning goes where wall-clock time is saved.
        The weights are normalised to average 1: the penalty has the same value at
        ``FCMask == 1`` whatever the weighting, so ``lambda`` keeps its scale.
    cost_model : KernelCostModel, optional
        The target's kernel cost model (:func:`tvm_freq.cost_model.resolve_cost_model`);
        needed by ``"latency"`` only.

    Returns
    -------
    torch.Tensor
        Scalar penalty (zero, without grad, when nothing is learnable).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "latency" and cost_model is None:
        raise ValueError("weighting='latency' needs a cost_model (a KernelCostModel)")
    groups = _mask_groups(model)
    if not groups:
        return torch.zeros(())
    terms = torch.stack([p.abs().mean() for _, p, _ in groups])
    if weighting == "mean":
        return terms.sum()
    # us per MAC of each kind; "macs" counts every MAC alike.
    per_mac = {"dct": 1.0, "gemm": 1.0, "idct": 1.0}
    if weighting == "latency":
        assert cost_model is not None
        per_mac = {kind: cost_model.freq_coefficient(f"{kind} macs") for kind in per_mac}
    costs = []
    for layer, _, side in groups:
        if layer.in_hw is None:
            raise ValueError(
                f"weighting={weighting!r} needs input sizes: "
                "run a forward pass or pass example_input to apply_"
            )
        h, w = layer.in_hw
        full = unpruned_macs(h, w, layer.block_size, layer.in_channels, layer.out_channels)
        # Each kept (channel, coefficient) costs k^2 in its transform and `other` in the GEMM.
        kind, transform = ("dct", full.dct) if side == "in" else ("idct", full.idct)
        costs.append(per_mac[kind] * transform + per_mac["gemm"] * full.gemm)
    cost = torch.tensor(costs, dtype=terms.dtype, device=terms.device)
    if not cost.sum() > 0:
        raise ValueError("the cost model gives the masked coefficients no cost; recalibrate it")
    weights = cost * (len(costs) / cost.sum())
    return (weights * terms).sum()
