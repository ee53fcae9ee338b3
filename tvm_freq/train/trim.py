"""Trimming learned masks to a MAC target: one common FCMask offset, found by bisection.

Mask learning rarely lands exactly on a MAC target. :func:`trim_to_target` shifts every
FCMask by the same offset (clamped to ``[0, 1]``), choosing the largest offset, so the
most coefficients kept, whose rounded masks still meet the target. Layers keep their
learned ranking of channels; only the common level moves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["TrimResult", "trim_to_target"]


@dataclass(frozen=True)
class TrimResult:
    """What :func:`trim_to_target` did.

    Attributes
    ----------
    offset : float
        Added to every FCMask (negative: fewer coefficients kept).
    reduction_before, reduction : float
        The measured reduction before and after the shift.
    reached : bool
        Whether the target is met; ``False`` when even all masks at 0 miss it (the
        masks are then left as they were).
    """

    offset: float
    reduction_before: float
    reduction: float
    reached: bool


def trim_to_target(
    params: Sequence[torch.nn.Parameter],
    reduction: Callable[[], float],
    target: float,
    *,
    iterations: int = 40,
) -> TrimResult:
    """Shift all FCMasks by the largest common offset whose reduction meets ``target``.

    Parameters
    ----------
    params : sequence of torch.nn.Parameter
        The FCMask parameters (values in ``[0, 1]``), changed in place.
    reduction : callable
        ``reduction()`` measures the model's MAC reduction (dense / pruned) from the
        current parameter values. It must not grow as the offset grows.
    target : float
        Reduction to meet, >= 1.
    iterations : int
        Bisection steps on the offset in ``[-1, 1]``.

    Returns
    -------
    TrimResult
    """
    orig = [p.detach().clone() for p in params]

    def reduction_at(delta: float) -> float:
        with torch.no_grad():
            for p, o in zip(params, orig, strict=True):
                p.copy_((o + delta).clamp_(0.0, 1.0))
        return reduction()

    before = reduction_at(0.0)
    lo, hi = -1.0, 1.0  # counts grow with the offset, so the reduction falls with it
    if reduction_at(lo) < target:
        reduction_at(0.0)  # unreachable even with every mask at 0: leave them be
        return TrimResult(0.0, before, before, False)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if reduction_at(mid) >= target:
            lo = mid
        else:
            hi = mid
    return TrimResult(lo, before, reduction_at(lo), True)
