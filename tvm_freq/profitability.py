"""Profitability by measurement: time frequency kernels against dense kernels in real runs.

Behind ``tvm_freq.build(..., profitability="measured")``: :func:`measure_latencies`
compiles a dense and an all-rewritten build of the same model and profiles both;
:func:`match_layer_kernels` pairs each layer's frequency kernel with its dense kernel.
The latencies it returns are given to the pass, which keeps the faster kernel per layer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import tvm

from .frontend import ImportedModel
from .masks import MaskFile
from .passes.decisions import LayerDecision
from .passes.frequency_band_pointwise import apply_masks_to_module
from .passes.options import FreqOptions, split_freq_options
from .report import BuildReport
from .runtime import KernelTime, median_profile
from .tuning import Tuning, UntunedWarning

__all__ = ["match_layer_kernels", "measure_latencies"]


def measure_latencies(
    mod: tvm.IRModule,
    masks: str | os.PathLike | MaskFile,
    imported: ImportedModel,
    target: tvm.target.Target,
    tuning: Tuning,
    threads: int = 1,
    options: FreqOptions | Mapping[str, Any] | None = None,
    rounds: int = 3,
) -> dict[int, tuple[float, float]]:
    """Time each masked layer's frequency kernel against its dense kernel, in real runs.

    Compiles the dense module and one with *every* masked layer rewritten (same records,
    same tuning budget), then profiles both, interleaved over ``rounds`` (the median per
    kernel call is kept). The dense kernel of a conv includes what Relax fused into it
    (bias, ReLU6, a residual add), as the frequency kernel includes bias and ReLU6.

    Parameters
    ----------
    mod : tvm.IRModule
        Imported Relax module.
    masks : str, pathlib.Path or MaskFile
        The masks.
    imported : ImportedModel
        Input names, shapes and dtypes of ``mod``.
    target : tvm.target.Target
        Compilation target.
    tuning : Tuning
        Records (and trial budget) for both builds.
    threads : int
        Runtime threads.
    options : FreqOptions or dict, optional
        Options of :class:`tvm_freq.passes.FrequencyBandPointwise` (``force`` and any
        ``latencies`` are ignored: every masked layer is rewritten for the measurement).
    rounds : int
        Profiling rounds.

    Returns
    -------
    dict
        ``{conv ordinal: (dense_us, freq_us)}`` for every masked layer found in both runs.
    """
    from .pipeline import _compile  # build() calls this module: import at call time

    opts = replace(split_freq_options(options)[0], force=True)
    forced, layers = apply_masks_to_module(mod, masks=masks, **opts.as_kwargs())
    # Missing records are tuned (and kept) here once; retuning is left to the final build.
    quiet = replace(tuning, progress=False, retune=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)  # build() itself warns once
        dense = _compile(mod, imported, target, quiet, threads, BuildReport(str(target), ""))
        freq = _compile(forced, imported, target, quiet, threads, BuildReport(str(target), ""))
    profiles: dict[str, list] = {"dense": [], "freq": []}
    for _ in range(rounds):
        profiles["dense"].append(dense.profile())
        profiles["freq"].append(freq.profile())
    return match_layer_kernels(
        median_profile(profiles["dense"]), median_profile(profiles["freq"]), layers
    )


def match_layer_kernels(
    dense_prof: Sequence[KernelTime],
    freq_prof: Sequence[KernelTime],
    layers: Sequence[LayerDecision],
) -> dict[int, tuple[float, float]]:
    """Pair each rewritten layer's frequency kernel with the dense kernel of its conv.

    Parameters
    ----------
    dense_prof, freq_prof : sequence of KernelTime
        Profiles of the dense and the frequency build (:meth:`CompiledModel.profile`).
    layers : sequence of LayerDecision
        Decisions of the frequency build, in conv order.

    Returns
    -------
    dict
        ``{conv ordinal: (dense_us, freq_us)}``. The dense kernel of a conv
        ``(n, cin, h, w) -> (n, cout, h, w)`` is the next conv kernel in execution order
        with those shapes; frequency kernels run in conv order.
    """
    out: dict[int, tuple[float, float]] = {}
    di = fi = 0
    for d in layers:
        if not d.rewritten:
            continue
        n = d.dense_macs // (d.cin * d.cout * d.height * d.width)
        want_in, want_out = (n, d.cin, d.height, d.width), (n, d.cout, d.height, d.width)
        while di < len(dense_prof) and not (
            "conv2d" in dense_prof[di].kernel
            and dense_prof[di].shapes
            and dense_prof[di].shapes[0] == want_in
            and dense_prof[di].shapes[-1] == want_out
        ):
            di += 1
        while fi < len(freq_prof) and not freq_prof[fi].kernel.startswith("freq_fused"):
            fi += 1
        if di >= len(dense_prof) or fi >= len(freq_prof):
            break
        out[d.ordinal] = (dense_prof[di].median_us, freq_prof[fi].median_us)
        di += 1
        fi += 1
    return out
