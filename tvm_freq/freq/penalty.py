"""The FCMask regulariser (paper section 3.3): :func:`fcmask_penalty`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..macs import unpruned_macs
from .apply import freq_layers
from .layer import FreqPointwiseConv2d

__all__ = ["fcmask_penalty"]


def _mask_groups(model: nn.Module) -> list[tuple[FreqPointwiseConv2d, nn.Parameter, str]]:
    groups = []
    for _, layer in freq_layers(model):
        for side, p in (("in", layer.fcmask_in), ("out", layer.fcmask_out)):
            if p is not None and layer.mode == "soft":
                groups.append((layer, p, side))
    return groups


def fcmask_penalty(model: nn.Module, weighting: Literal["mean", "macs"] = "mean") -> torch.Tensor:
    """FCMask regulariser: ``sum over layers of mean(|FCMask_l|)`` (paper section 3.3).

    Every learned mask vector (a layer's input side and output side count
    separately) adds ``w_g * mean(|FCMask_g|)``.

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model; layers in hard or fixed mode are ignored.
    weighting : {"mean", "macs"}
        ``"mean"``: ``w_g = 1`` (the paper). ``"macs"``: ``w_g`` proportional to the
        MACs the group's coefficients cost when all are kept (DCT or IDCT plus the
        GEMM work they feed), normalised so the weights average 1. The penalty has
        the same value at ``FCMask == 1`` either way, so ``lambda`` keeps its scale,
        but the push is strongest where pruning saves the most MACs.

    Returns
    -------
    torch.Tensor
        Scalar penalty (zero, without grad, when nothing is learnable).
    """
    if weighting not in ("mean", "macs"):
        raise ValueError(f"weighting must be 'mean' or 'macs', got {weighting!r}")
    groups = _mask_groups(model)
    if not groups:
        return torch.zeros(())
    terms = torch.stack([p.abs().mean() for _, p, _ in groups])
    if weighting == "mean":
        return terms.sum()
    costs = []
    for layer, _, side in groups:
        if layer.in_hw is None:
            raise ValueError(
                "weighting='macs' needs input sizes: "
                "run a forward pass or pass example_input to apply_"
            )
        h, w = layer.in_hw
        full = unpruned_macs(h, w, layer.block_size, layer.in_channels, layer.out_channels)
        # Each kept (channel, coefficient) costs k^2 in its transform and `other` in the GEMM.
        costs.append((full.dct if side == "in" else full.idct) + full.gemm)
    cost = torch.tensor(costs, dtype=terms.dtype, device=terms.device)
    weights = cost * (len(costs) / cost.sum())
    return (weights * terms).sum()
