"""Coefficient-mask arithmetic: FCMask -> soft masks, rounding, prefix (band) masks.

Learned masks (paper section 3.3) give ``coefmask_n = clamp((FCMask - n / num_coefs) *
num_coefs, 0, 1)`` per channel (:func:`coef_masks`); rounded to 0/1 they keep a
prefix of the zigzag coefficients (:func:`hard_counts`, :func:`prefix_masks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["coef_masks", "hard_counts", "prefix_masks", "is_prefix_mask", "prefix_counts"]


def coef_masks(fcmask: torch.Tensor, num_coefs: int) -> torch.Tensor:
    """Soft coefficient masks from FCMask values (paper section 3.3).

    Parameters
    ----------
    fcmask : torch.Tensor
        ``[C]`` FCMask values, one per channel.
    num_coefs : int
        ``k*k``.

    Returns
    -------
    torch.Tensor
        ``[C, num_coefs]`` with ``clamp((FCMask - n / num_coefs) * num_coefs, 0, 1)``.
    """
    n = torch.arange(num_coefs, dtype=fcmask.dtype, device=fcmask.device)
    # F * nc - n is the paper's formula rearranged; it is exactly 1.0 at F == 1 for any nc.
    return torch.clamp(fcmask[:, None] * num_coefs - n[None, :], 0.0, 1.0)


def hard_counts(fcmask: torch.Tensor, num_coefs: int) -> torch.Tensor:
    """Kept coefficient counts after rounding the soft masks to 0/1.

    Coefficient ``n`` is kept when ``coefmask_n > 0.5``. Because ``coefmask_n`` does not
    increase with ``n``, the kept set is the prefix ``n < count``.

    Parameters
    ----------
    fcmask : torch.Tensor
        ``[C]`` FCMask values.
    num_coefs : int
        ``k*k``.

    Returns
    -------
    torch.Tensor
        ``[C]`` int64 counts in ``[0, num_coefs]``.
    """
    with torch.no_grad():
        return (coef_masks(fcmask.detach(), num_coefs) > 0.5).sum(dim=1).to(torch.int64)


def prefix_masks(counts: torch.Tensor | Sequence[int], num_coefs: int) -> torch.Tensor:
    """0/1 float masks ``[C, num_coefs]`` keeping the first ``counts[c]`` coefficients.

    Parameters
    ----------
    counts : torch.Tensor or sequence of int
        Kept counts per channel, each in ``[0, num_coefs]``.
    num_coefs : int
        ``k*k``.

    Returns
    -------
    torch.Tensor
        float32 masks.
    """
    counts = torch.as_tensor(counts, dtype=torch.int64)
    if counts.dim() != 1 or (counts.numel() and (counts.min() < 0 or counts.max() > num_coefs)):
        raise ValueError(f"counts must be a 1-D list of ints in [0, {num_coefs}]")
    return (torch.arange(num_coefs)[None, :] < counts[:, None]).to(torch.float32)


def is_prefix_mask(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Which rows of a ``[C, n]`` mask are 0/1 and keep a prefix of the coefficients.

    Parameters
    ----------
    mask : torch.Tensor or numpy.ndarray
        ``[C, n]`` mask.

    Returns
    -------
    numpy.ndarray
        ``[C]`` bool.
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    binary = np.all((m == 0) | (m == 1), axis=1)
    kept = m != 0
    # A prefix mask is non-increasing along the coefficient axis.
    monotone = (
        np.all(kept[:, :-1] >= kept[:, 1:], axis=1) if m.shape[1] > 1 else np.ones(len(m), bool)
    )
    return binary & monotone


def prefix_counts(mask: torch.Tensor | None, channels: int, nc: int, what: str) -> np.ndarray:
    """Kept counts per channel of a prefix (band) mask.

    Parameters
    ----------
    mask : torch.Tensor or None
        ``[C, nc]`` mask; ``None`` means unmasked (every coefficient kept).
    channels : int
        ``C``, used when ``mask`` is ``None``.
    nc : int
        ``k*k``.
    what : str
        Side named in the error message (``"input"``, ``"output"``).

    Returns
    -------
    numpy.ndarray
        int64 ``[C]`` counts.

    Raises
    ------
    ValueError
        When a row is not a prefix (channel-coefficient masks).
    """
    if mask is None:
        return np.full(channels, nc, dtype=np.int64)
    if not is_prefix_mask(mask).all():
        raise ValueError(
            f"{what} masks are not contiguous prefixes (channel-coefficient masks?); "
            "kept counts exist only for channel-frequency band masks"
        )
    return (mask != 0).sum(dim=1).cpu().numpy().astype(np.int64)
