"""Wrapping a model: :class:`FreqConfig`, :func:`apply_`, and model-wide helpers.

:func:`apply_` wraps the eligible pointwise convs in place and reports what it wrapped
and skipped; :func:`freq_layers`, :func:`fcmask_parameters`, :func:`squash`,
:func:`kept_counts` and :func:`unwrap_` act on a wrapped model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from torch import nn

from ..dct import check_block
from .layer import WHERE, FreqPointwiseConv2d, Where
from .policies import BlockSizeFn
from .sites import PointwiseSite, pointwise_sites, pointwise_skip_reason

__all__ = [
    "FreqConfig",
    "WrappedLayer",
    "SkippedLayer",
    "ApplyReport",
    "set_submodule",
    "apply_",
    "freq_layers",
    "fcmask_parameters",
    "squash",
    "KeptCounts",
    "kept_counts",
    "unwrap_",
]


@dataclass
class FreqConfig:
    """How :func:`apply_` wraps pointwise convs.

    Parameters
    ----------
    block_size : int or callable
        Macroblock size for every layer, or ``fn(name, conv, input_hw) -> int | None``
        giving it per layer (``None`` skips the layer). A callable needs
        ``example_input`` in :func:`apply_`.
    where : {"in", "out", "both"}
        Which channels carry learned masks.
    learn : bool
        Create learnable FCMask parameters.
    init : float
        Initial FCMask value in ``[0, 1]``.
    """

    block_size: int | BlockSizeFn = 4
    where: Where = "in"
    learn: bool = True
    init: float = 1.0

    def __post_init__(self) -> None:
        if not callable(self.block_size):
            check_block(self.block_size, "block size")
        if self.where not in WHERE:
            raise ValueError(f"where must be one of {WHERE}, got {self.where!r}")
        if not isinstance(self.learn, bool):
            raise ValueError(f"learn must be a bool, got {self.learn!r}")
        if not isinstance(self.init, (int, float)) or not 0.0 <= float(self.init) <= 1.0:
            raise ValueError(f"init must be a number in [0, 1], got {self.init!r}")


@dataclass(frozen=True)
class WrappedLayer:
    """A conv that :func:`apply_` wrapped."""

    name: str
    ordinal: int | None
    block_size: int
    in_channels: int
    out_channels: int
    in_hw: tuple[int, int] | None


@dataclass(frozen=True)
class SkippedLayer:
    """A conv that :func:`apply_` left alone, and why."""

    name: str
    reason: str


@dataclass
class ApplyReport:
    """What :func:`apply_` wrapped and skipped."""

    wrapped: list[WrappedLayer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"wrapped {len(self.wrapped)} pointwise convs, skipped {len(self.skipped)} convs"]
        for w in self.wrapped:
            hw = f" {w.in_hw[0]}x{w.in_hw[1]}" if w.in_hw else ""
            lines.append(f"  + {w.name}: {w.in_channels}->{w.out_channels}{hw} k={w.block_size}")
        for s in self.skipped:
            lines.append(f"  - {s.name}: {s.reason}")
        return "\n".join(lines)


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) of ``model`` by ``new``.

    Parameters
    ----------
    model : torch.nn.Module
        Model changed in place.
    name : str
        Qualified module name, e.g. ``features.2.conv.0.0``.
    new : torch.nn.Module
        Replacement.
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_(
    model: nn.Module,
    config: FreqConfig | None = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    example_input: Any = None,
) -> ApplyReport:
    """Wrap the eligible pointwise convs of ``model`` in place with :class:`FreqPointwiseConv2d`.

    Parameters
    ----------
    model : torch.nn.Module
        Model to modify in place.
    config : FreqConfig, optional
        Block size policy and mask options; defaults to ``FreqConfig()``.
    filter_fn : callable, optional
        ``filter_fn(module, qualified_name) -> bool`` (torchao's order); convs it
        rejects are skipped.
    example_input : torch.Tensor or tuple, optional
        Input for one forward pass that finds execution order and input sizes.
        Needed for a callable ``block_size``, recommended otherwise (MAC accounting
        and the MAC-weighted penalty need input sizes).

    Returns
    -------
    ApplyReport
        The wrapped layers (with ordinals and input sizes when known) and the
        skipped convs with a reason each.
    """
    config = config or FreqConfig()
    if callable(config.block_size) and example_input is None:
        raise ValueError(
            "a callable block_size needs example_input to know each layer's input size"
        )
    report = ApplyReport()
    sites: dict[str, PointwiseSite] = {}
    if example_input is not None:
        sites = {s.name: s for s in pointwise_sites(model, example_input)}
    candidates = [
        (n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, FreqPointwiseConv2d))
    ]
    for name, mod in candidates:
        if isinstance(mod, FreqPointwiseConv2d):
            report.skipped.append(SkippedLayer(name, "already wrapped"))
            continue
        reason = pointwise_skip_reason(mod)
        if reason is None and example_input is not None and name not in sites:
            reason = "not executed by example_input"
        if reason is None and filter_fn is not None and not filter_fn(mod, name):
            reason = "rejected by filter_fn"
        site = sites.get(name)
        k: int | None = None
        if reason is None:
            if callable(config.block_size):
                assert site is not None
                k = config.block_size(name, mod, site.in_hw)
                if k is None:
                    reason = "block_size policy returned None"
                else:
                    check_block(k, "block size")
            else:
                k = config.block_size
        if reason is not None:
            report.skipped.append(SkippedLayer(name, reason))
            continue
        assert k is not None
        layer = FreqPointwiseConv2d(mod, k, config.where, config.learn, float(config.init))
        layer.train(mod.training)
        if site is not None:
            layer.in_hw = site.in_hw
        set_submodule(model, name, layer)
        report.wrapped.append(
            WrappedLayer(
                name,
                site.ordinal if site else None,
                k,
                mod.in_channels,
                mod.out_channels,
                site.in_hw if site else None,
            )
        )
    report.wrapped.sort(key=lambda w: (w.ordinal is None, w.ordinal or 0))
    return report


def freq_layers(model: nn.Module) -> Iterator[tuple[str, FreqPointwiseConv2d]]:
    """Yield ``(name, layer)`` for every :class:`FreqPointwiseConv2d` in ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        Any model.

    Yields
    ------
    tuple of (str, FreqPointwiseConv2d)
        Qualified name and layer, in module order.
    """
    for name, mod in model.named_modules():
        if isinstance(mod, FreqPointwiseConv2d):
            yield name, mod


def fcmask_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All FCMask parameters of ``model`` (for a mask optimizer).

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.

    Returns
    -------
    list of torch.nn.Parameter
        ``fcmask_in`` / ``fcmask_out`` of every layer.
    """
    return [
        p
        for _, layer in freq_layers(model)
        for p in (layer.fcmask_in, layer.fcmask_out)
        if p is not None
    ]


def squash(model: nn.Module) -> nn.Module:
    """Hard-round every learned mask to 0/1 and freeze it (in place).

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.

    Returns
    -------
    torch.nn.Module
        ``model``.
    """
    for _, layer in freq_layers(model):
        layer.squash_()
    return model


class KeptCounts(NamedTuple):
    """Per-channel kept coefficient counts of one layer."""

    block_size: int
    kin: list[int]
    kout: list[int]


def kept_counts(model: nn.Module) -> dict[str, KeptCounts]:
    """Kept coefficient counts of every wrapped layer, as deployed (rounded masks).

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model.

    Returns
    -------
    dict of str to KeptCounts
        Keyed by layer name.
    """
    out = {}
    for name, layer in freq_layers(model):
        kin, kout = layer.kept_counts()
        out[name] = KeptCounts(layer.block_size, kin.tolist(), kout.tolist())
    return out


def unwrap_(model: nn.Module) -> nn.Module:
    """Replace every :class:`FreqPointwiseConv2d` by its plain conv (in place).

    Parameters
    ----------
    model : torch.nn.Module
        A wrapped model (deep-copy it first to keep the wrapped one).

    Returns
    -------
    torch.nn.Module
        ``model``, now with plain ``nn.Conv2d`` layers.
    """
    for name, layer in list(freq_layers(model)):
        conv = layer.to_conv()
        conv.train(layer.training)
        set_submodule(model, name, conv)
    return model
