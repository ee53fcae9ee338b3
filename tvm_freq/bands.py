"""Energy-fraction band selection (NumPy): the kept zigzag prefix of every channel.

Shared by the compiler's calibration (:mod:`tvm_freq.calibrate`) and the PyTorch
profiling strategies (:func:`tvm_freq.freq.prune.band_masks_from_energy`). Imports
neither PyTorch nor TVM.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_energy", "band_counts_from_energy"]


def check_energy(energy: float) -> None:
    """Check an energy fraction: in ``(0, 1]``.

    Parameters
    ----------
    energy : float
        Fraction of the energy to keep.
    """
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")


def band_counts_from_energy(e: np.ndarray, energy: float = 0.99) -> np.ndarray:
    """Per channel, the length of the shortest zigzag prefix holding ``energy`` of its energy.

    Parameters
    ----------
    e : numpy.ndarray
        ``[C, k*k]`` non-negative per-channel per-coefficient energies.
    energy : float
        Fraction of the energy to keep, in ``(0, 1]``.

    Returns
    -------
    numpy.ndarray
        int64 ``[C]`` kept counts in ``[0, k*k]``; silent channels (zero energy) keep 0.
    """
    check_energy(energy)
    e = np.asarray(e, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"energy arrays must be [C, k*k], got shape {e.shape}")
    if np.any(e < 0) or not np.all(np.isfinite(e)):
        raise ValueError("energy arrays must be finite and non-negative")
    nc = e.shape[1]
    if math.isqrt(nc) ** 2 != nc:
        raise ValueError(f"the coefficient axis must have k*k entries, got {nc}")
    cum = np.cumsum(e, axis=1)
    total = cum[:, -1:]
    # Smallest m with cum[m-1] >= energy * total; cum[-1] is the total, so m <= k*k.
    counts = (cum < energy * total).sum(axis=1) + 1
    counts[total[:, 0] <= 0] = 0  # a silent channel needs no coefficients
    return np.minimum(counts, nc).astype(np.int64)
