"""Which convs are eligible pointwise convs, and where they run in a forward pass.

:func:`pointwise_skip_reason` says why a module is not eligible; :func:`pointwise_sites`
lists the eligible ones in execution order (the ``ordinal`` of mask files) with their
input sizes. :func:`trace_modules` and :func:`run_example` are the bookkeeping forward
pass they use (eval mode, no gradients, training flags restored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .layer import FreqPointwiseConv2d, conv2d_skip_reason

__all__ = [
    "pointwise_skip_reason",
    "PointwiseSite",
    "run_example",
    "trace_modules",
    "pointwise_sites",
]


def pointwise_skip_reason(module: nn.Module) -> str | None:
    """Why a module is not an eligible pointwise conv, or ``None`` when it is one.

    Eligible: what :func:`~tvm_freq.freq.layer.conv2d_skip_reason` accepts, or a
    :class:`FreqPointwiseConv2d` (which wraps one).

    Parameters
    ----------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    str or None
        A short reason, e.g. ``"stride (2, 2) != 1"``.
    """
    if isinstance(module, FreqPointwiseConv2d):
        return None
    return conv2d_skip_reason(module)


@dataclass(frozen=True)
class PointwiseSite:
    """An eligible pointwise conv as seen in one forward pass.

    Attributes
    ----------
    name : str
        Qualified module name.
    ordinal : int
        0-based index among eligible pointwise convs in forward execution order.
    module : torch.nn.Module
        The ``nn.Conv2d`` or :class:`FreqPointwiseConv2d`.
    in_hw : tuple of int
        Input height and width.
    batch : int
        Batch size of the example input.
    """

    name: str
    ordinal: int
    module: nn.Module
    in_hw: tuple[int, int]
    batch: int


def run_example(model: nn.Module, example_input: Any) -> Any:
    """One bookkeeping forward pass: eval mode, no gradients, training flags restored.

    Parameters
    ----------
    model : torch.nn.Module
        Any model.
    example_input : torch.Tensor or tuple of torch.Tensor
        Input(s) of the pass.

    Returns
    -------
    Any
        The model's output.
    """
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    modes = {m: m.training for m in model.modules()}
    model.eval()  # BN must not update its running stats during a bookkeeping pass
    try:
        with torch.no_grad():
            return model(*args)
    finally:
        for m, training in modes.items():
            m.training = training


def trace_modules(
    model: nn.Module, example_input: Any, want: Callable[[nn.Module], bool]
) -> list[tuple[str, nn.Module, tuple, Any]]:
    """Run ``example_input`` and record (name, module, input shape, output) in call order.

    Parameters
    ----------
    model : torch.nn.Module
        Any model.
    example_input : torch.Tensor or tuple of torch.Tensor
        Input(s) of the pass (see :func:`run_example`).
    want : callable
        ``want(module) -> bool``: which modules to record. A shared module counts
        once, at its first call.

    Returns
    -------
    list of tuple
        ``(name, module, input shape, output)`` per recorded call.
    """
    calls: list[tuple[str, nn.Module, tuple, Any]] = []
    seen: set[int] = set()
    handles = []

    def hook(name: str):
        def fn(mod: nn.Module, args: tuple, out: Any) -> None:
            if id(mod) in seen:  # a shared module counts once, at its first call
                return
            seen.add(id(mod))
            calls.append((name, mod, tuple(args[0].shape), out))

        return fn

    for name, mod in model.named_modules():
        if want(mod):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        run_example(model, example_input)
    finally:
        for h in handles:
            h.remove()
    return calls


def pointwise_sites(model: nn.Module, example_input: Any) -> list[PointwiseSite]:
    """Eligible pointwise convs in forward execution order, with their input sizes.

    The order is the one the convs have in an exported graph; it defines the
    ``ordinal`` of mask files. Convs the example input does not reach are left out.

    Parameters
    ----------
    model : torch.nn.Module
        Plain or wrapped model.
    example_input : torch.Tensor or tuple of torch.Tensor
        Input(s) for one forward pass (run in eval mode, without gradients).

    Returns
    -------
    list of PointwiseSite
        One per eligible conv that ran.
    """
    calls = trace_modules(
        model,
        example_input,
        lambda m: (
            isinstance(m, (nn.Conv2d, FreqPointwiseConv2d)) and pointwise_skip_reason(m) is None
        ),
    )
    return [
        PointwiseSite(name, i, mod, (shape[2], shape[3]), shape[0])
        for i, (name, mod, shape, _) in enumerate(calls)
    ]
