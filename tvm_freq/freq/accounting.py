"""Whole-model MAC accounting of a plain or wrapped model on one example input.

:func:`model_macs` traces every conv and linear layer; wrapped pointwise convs are
counted with their deployed masks through the formulas of :mod:`tvm_freq.macs`.
:func:`refresh_macs` recounts after the masks changed, without a forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..macs import LayerMacs, dense_pointwise_macs, unpruned_macs
from .apply import freq_layers
from .layer import FreqPointwiseConv2d
from .sites import pointwise_skip_reason, trace_modules

__all__ = ["PointwiseMacs", "ModelMacs", "model_macs", "refresh_macs"]


@dataclass(frozen=True)
class PointwiseMacs:
    """MACs of one eligible pointwise conv; ``macs`` counts dense-only when not wrapped."""

    name: str
    ordinal: int
    in_hw: tuple[int, int]
    in_channels: int
    out_channels: int
    block_size: int | None
    macs: LayerMacs
    batch: int = 1

    @property
    def cost(self) -> int:
        """MACs as deployed: frequency path when wrapped, dense otherwise."""
        return self.macs.freq if self.block_size is not None else self.macs.dense


@dataclass(frozen=True)
class ModelMacs:
    """Whole-model MAC accounting (all convs and linears) for one example input.

    Attributes
    ----------
    pointwise : tuple of PointwiseMacs
        Eligible pointwise convs in execution order.
    other : int
        MACs of every other conv and linear layer.
    """

    pointwise: tuple[PointwiseMacs, ...]
    other: int

    @property
    def pointwise_dense(self) -> int:
        """Dense MACs of the eligible pointwise convs."""
        return sum(p.macs.dense for p in self.pointwise)

    @property
    def pointwise_freq(self) -> int:
        """Pointwise MACs as deployed, DCT/IDCT overhead included."""
        return sum(p.cost for p in self.pointwise)

    @property
    def transform_overhead(self) -> int:
        """DCT + IDCT MACs of the wrapped layers."""
        return sum(p.macs.dct + p.macs.idct for p in self.pointwise if p.block_size is not None)

    @property
    def pointwise_reduction(self) -> float:
        """``pointwise_dense / pointwise_freq`` (> 1 is a saving)."""
        return self.pointwise_dense / self.pointwise_freq if self.pointwise_freq else math.inf

    @property
    def network_dense(self) -> int:
        """MACs of the plain model: all convs and linears."""
        return self.other + self.pointwise_dense

    @property
    def network_freq(self) -> int:
        """MACs of the whole model as deployed."""
        return self.other + self.pointwise_freq

    @property
    def network_reduction(self) -> float:
        """``network_dense / network_freq``."""
        return self.network_dense / self.network_freq if self.network_freq else math.inf

    @property
    def network_deployed(self) -> int:
        """Whole-model MACs when every wrapped layer that would not save MACs stays dense.

        The compiler's default rule keeps such layers dense, so this is what a build
        with these masks computes.
        """
        return self.other + sum(min(p.cost, p.macs.dense) for p in self.pointwise)

    @property
    def deployed_reduction(self) -> float:
        """``network_dense / network_deployed`` (> 1 is a saving)."""
        return self.network_dense / self.network_deployed if self.network_deployed else math.inf

    def as_dict(self) -> dict[str, Any]:
        """Summary numbers and per-layer rows, JSON-serialisable.

        Returns
        -------
        dict
            Totals and a ``layers`` list.
        """
        return {
            "pointwise_dense": self.pointwise_dense,
            "pointwise_freq": self.pointwise_freq,
            "pointwise_reduction": self.pointwise_reduction,
            "transform_overhead": self.transform_overhead,
            "network_dense": self.network_dense,
            "network_freq": self.network_freq,
            "network_reduction": self.network_reduction,
            "network_deployed": self.network_deployed,
            "deployed_reduction": self.deployed_reduction,
            "other": self.other,
            "layers": [
                {
                    "name": p.name,
                    "ordinal": p.ordinal,
                    "in_hw": list(p.in_hw),
                    "cin": p.in_channels,
                    "cout": p.out_channels,
                    "block": p.block_size,
                    "dense": p.macs.dense,
                    "dct": p.macs.dct,
                    "gemm": p.macs.gemm,
                    "idct": p.macs.idct,
                }
                for p in self.pointwise
            ],
        }


def model_macs(model: nn.Module, example_input: Any, *, unpruned: bool = False) -> ModelMacs:
    """Count the MACs of every conv and linear layer on one example input.

    Wrapped pointwise convs are counted with their deployed (rounded) masks: dense
    pointwise, truncated DCT, banded GEMMs and IDCT (:func:`tvm_freq.macs.pointwise_macs`).

    Parameters
    ----------
    model : torch.nn.Module
        Plain or wrapped model.
    example_input : torch.Tensor or tuple
        Input whose batch size the counts are for.
    unpruned : bool
        Count wrapped layers as if every coefficient were kept (transform overhead only).

    Returns
    -------
    ModelMacs
        Per-layer and whole-model counts.
    """
    calls = trace_modules(
        model, example_input, lambda m: isinstance(m, (nn.Conv2d, nn.Linear, FreqPointwiseConv2d))
    )
    pointwise: list[PointwiseMacs] = []
    other = 0
    for name, mod, shape, out in calls:
        if isinstance(mod, nn.Linear):
            other += int(out.numel()) * mod.in_features
            continue
        if pointwise_skip_reason(mod) is not None:
            assert isinstance(mod, nn.Conv2d)
            kh, kw = mod.kernel_size
            other += int(out.numel()) * (mod.in_channels // mod.groups) * kh * kw
            continue
        batch, _, h, w = shape
        cin, cout = mod.in_channels, mod.out_channels
        if isinstance(mod, FreqPointwiseConv2d):
            k = mod.block_size
            if unpruned:
                lm = unpruned_macs(h, w, k, cin, cout, batch)
            else:
                lm = mod.macs((h, w), batch)
            block: int | None = k
        else:
            dense = dense_pointwise_macs(h, w, cin, cout, batch)
            lm = LayerMacs(dense=dense, dct=0, gemm=0, idct=0)
            block = None
        pointwise.append(PointwiseMacs(name, len(pointwise), (h, w), cin, cout, block, lm, batch))
    return ModelMacs(tuple(pointwise), other)


def refresh_macs(model: nn.Module, base: ModelMacs) -> ModelMacs:
    """Recount the wrapped layers of ``base`` from their current masks, without a forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        The model ``base`` was counted on (same wrapped layers).
    base : ModelMacs
        An earlier :func:`model_macs` result; input sizes and other layers come from it.

    Returns
    -------
    ModelMacs
        Counts for the masks the model has now.
    """
    layers = dict(freq_layers(model))
    rows = []
    for p in base.pointwise:
        layer = layers.get(p.name)
        if layer is not None and p.block_size is not None:
            p = PointwiseMacs(
                p.name,
                p.ordinal,
                p.in_hw,
                p.in_channels,
                p.out_channels,
                p.block_size,
                layer.macs(p.in_hw, p.batch),
            )
        rows.append(p)
    return ModelMacs(tuple(rows), base.other)
