"""The three mask modes of :class:`~tvm_freq.freq.layer.FreqPointwiseConv2d`.

A layer masks the coefficients of its input and output channels (its two *sides*). Where
each side's mask comes from depends on the layer's :class:`MaskMode`, and each mode's
rules live in one small class here:

* :class:`SoftMasks` (``"soft"``): FCMask values -> soft masks, differentiable;
* :class:`HardMasks` (``"hard"``): FCMask masks rounded to 0/1 prefixes (bands);
* :class:`FixedMasks` (``"fixed"``): the masks given to ``set_fixed_masks``.

Every mode answers the three questions of :class:`MaskRules` about one side: the mask
the forward pass applies, the deployed 0/1 mask, and the kept coefficients per channel.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple, Protocol

import numpy as np
import torch

from .mask_math import coef_masks, hard_counts, prefix_counts, prefix_masks

__all__ = [
    "MaskMode",
    "MaskSide",
    "MaskRules",
    "SoftMasks",
    "HardMasks",
    "FixedMasks",
    "mask_rules",
]


class MaskMode(StrEnum):
    """Where a layer's coefficient masks come from; compares equal to its string value."""

    SOFT = "soft"
    HARD = "hard"
    FIXED = "fixed"


class MaskSide(NamedTuple):
    """The masks of one side (input or output channels) of a layer."""

    name: str
    """``"input"`` or ``"output"`` (for error messages)."""
    channels: int
    """Channels of this side."""
    num_coefs: int
    """``k*k``."""
    fcmask: torch.Tensor | None
    """Learned FCMask values ``[channels]``, or ``None`` (side not learned)."""
    fixed: torch.Tensor | None
    """Fixed mask ``[channels, k*k]``, or ``None`` (unmasked in fixed mode)."""

    def full_counts(self) -> np.ndarray:
        """Counts of an unmasked side: every channel keeps all ``k*k`` coefficients."""
        return np.full(self.channels, self.num_coefs, np.int64)


class MaskRules(Protocol):
    """The rules of one mode; each method takes one :class:`MaskSide` of a layer."""

    truncates: bool
    """The forward masks are 0/1, so coefficients no channel keeps are not computed."""

    def forward_mask(self, side: MaskSide) -> torch.Tensor | None:
        """``[channels, k*k]`` mask the forward pass applies; ``None`` when unmasked."""
        ...

    def deployed(self, side: MaskSide) -> np.ndarray:
        """Bool ``[channels, k*k]`` mask as deployed; all True when unmasked."""
        ...

    def counts(self, side: MaskSide) -> np.ndarray:
        """Int64 ``[channels]`` kept prefix lengths; ``ValueError`` if not a prefix."""
        ...


class _LearnedMasks:
    """Shared rules of the two FCMask modes: deployed masks are the rounded FCMasks."""

    truncates = True

    def counts(self, side: MaskSide) -> np.ndarray:
        """Counts of the rounded FCMask (always a prefix); all ``k*k`` when not learned."""
        if side.fcmask is None:
            return side.full_counts()
        return hard_counts(side.fcmask, side.num_coefs).cpu().numpy()

    def deployed(self, side: MaskSide) -> np.ndarray:
        """The prefix of :meth:`counts` coefficients of every channel."""
        return prefix_masks(self.counts(side), side.num_coefs).numpy() != 0


class SoftMasks(_LearnedMasks):
    """``"soft"``: differentiable masks from FCMask (no truncation, they are not 0/1)."""

    truncates = False

    def forward_mask(self, side: MaskSide) -> torch.Tensor | None:
        """Soft coefficient masks of the side's FCMask; ``None`` when not learned."""
        return None if side.fcmask is None else coef_masks(side.fcmask, side.num_coefs)


class HardMasks(_LearnedMasks):
    """``"hard"``: FCMask masks rounded to 0/1 prefixes (bands)."""

    def forward_mask(self, side: MaskSide) -> torch.Tensor | None:
        """The rounded FCMask as a 0/1 prefix mask; ``None`` when not learned."""
        if side.fcmask is None:
            return None
        nc = side.num_coefs
        return prefix_masks(hard_counts(side.fcmask, nc), nc).to(side.fcmask)


class FixedMasks:
    """``"fixed"``: the masks set with ``set_fixed_masks``, any 0/1 or float values."""

    truncates = True

    def forward_mask(self, side: MaskSide) -> torch.Tensor | None:
        """The fixed mask as set; ``None`` when this side is unmasked."""
        return side.fixed

    def counts(self, side: MaskSide) -> np.ndarray:
        """Counts of a prefix (band) fixed mask; raises for any other mask."""
        return prefix_counts(side.fixed, side.channels, side.num_coefs, side.name)

    def deployed(self, side: MaskSide) -> np.ndarray:
        """The fixed mask's non-zero entries."""
        if side.fixed is None:
            return np.ones((side.channels, side.num_coefs), bool)
        return side.fixed.detach().cpu().numpy() != 0


_RULES: dict[MaskMode, MaskRules] = {
    MaskMode.SOFT: SoftMasks(),
    MaskMode.HARD: HardMasks(),
    MaskMode.FIXED: FixedMasks(),
}


def mask_rules(mode: MaskMode) -> MaskRules:
    """The rules of one mode.

    Parameters
    ----------
    mode : MaskMode
        The layer's mode.

    Returns
    -------
    MaskRules
        :class:`SoftMasks`, :class:`HardMasks` or :class:`FixedMasks`.
    """
    return _RULES[mode]
