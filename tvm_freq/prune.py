"""Compatibility alias: profiling-based pruning lives in :mod:`tvm_freq.freq.prune`."""

from __future__ import annotations

from .freq.prune import (
    STRATEGIES,
    ContiguityReport,
    LayerStats,
    Strategy,
    SweepPoint,
    apply_counts,
    apply_profile,
    band_masks_from_energy,
    collect_stats,
    contiguity_report,
    find_threshold,
    profile_masks,
    strategy_mask,
    sweep,
)

__all__ = [
    "Strategy",
    "STRATEGIES",
    "LayerStats",
    "collect_stats",
    "strategy_mask",
    "profile_masks",
    "apply_profile",
    "SweepPoint",
    "sweep",
    "find_threshold",
    "ContiguityReport",
    "contiguity_report",
    "band_masks_from_energy",
    "apply_counts",
]
