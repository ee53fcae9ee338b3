"""The compile pipeline behind ``tvm_freq.build``: import, passes, fuse, records, compile.

Pipeline (every stage is an ordinary TVM pass or MetaSchedule call):

1. :func:`tvm_freq.frontend.import_model`: Relax with constants bound, batch norm folded.
2. With ``masks``: :class:`tvm_freq.passes.FrequencyBandPointwise` rewrites pruned
   pointwise convs into frequency-band kernels.
3. ``LegalizeOps``, ``FuseOps``, ``FuseTIR`` (Relax's zero pipeline) and, with
   ``cpu_weight_prepack``, ``AttachAttrLayoutFreeBuffers`` so tuned schedules may
   pre-pack weights.
4. MetaSchedule: records are looked up in the user's store and the shipped one;
   tasks with no record are tuned only when ``tuning.trials > 0``. Frequency-band
   kernels are tuned in their own design space: the hand-written schedule of
   ``tvm_freq.schedules.freq_pointwise`` with its tile sizes as MetaSchedule decisions.
5. ``MetaScheduleApplyDatabase``; kernels without a record get a hand-written default
   schedule where one fits (frequency-band kernels, dense convs, matmuls); the weight layout rewrite
   (folded into the constants); then ``tvm.compile``.

Step 4 lives in :mod:`tvm_freq.tuning`; ``profitability="measured"`` (timing each
layer's frequency kernel against its dense kernel before step 2) in
:mod:`tvm_freq.profitability`. Their public names are re-exported here.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import tvm
from tvm import relax

from tvm_freq.schedules import conv2d
from tvm_freq.schedules.freq_pointwise import default_schedule, is_fused_pointwise

from .cost_model import KernelCostModel, load_cost_model
from .frontend import ImportedModel, ModelLike, import_model
from .masks import MaskFile
from .passes.decisions import DecisionRule
from .passes.frequency_band_pointwise import apply_masks_to_module
from .passes.options import FreqOptions, split_freq_options
from .profitability import match_layer_kernels, measure_latencies
from .records import RecordStore, shipped_records_root
from .report import BuildReport
from .runtime import CompiledModel
from .target import host_cpu, host_target, resolve_target, target_key
from .tuning import Tuning, UntunedWarning, tune

__all__ = [
    "Tuning", "BuildReport", "FreqOptions", "UntunedWarning", "apply_default_schedules", "build",
    "lower", "tune", "measure_latencies", "match_layer_kernels", "find_cost_model", "PROFITABILITY",
]  # fmt: skip


def lower(
    mod: tvm.IRModule, target: tvm.target.Target, *, cpu_weight_prepack: bool = True
) -> tvm.IRModule:
    """Legalise and fuse a Relax module into the TIR tasks MetaSchedule tunes.

    Parameters
    ----------
    mod : tvm.IRModule
        Relax module (after the tvm_freq passes).
    target : tvm.target.Target
        Compilation target.
    cpu_weight_prepack : bool
        Mark constant weight buffers layout-free.

    Returns
    -------
    tvm.IRModule
        The fused module.
    """
    passes = [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    if cpu_weight_prepack:
        passes.append(relax.transform.AttachAttrLayoutFreeBuffers())
    with target:
        return tvm.transform.Sequential(passes)(mod)


def apply_default_schedules(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Give every kernel that is still unscheduled its hand-written default schedule.

    Frequency-band kernels get :mod:`tvm_freq.schedules.freq_pointwise`; dense convs and
    matmuls get :mod:`tvm_freq.schedules.conv2d`. Kernels that a tuning record
    scheduled (marked ``tirx.is_scheduled``) are left as they are, and so are kernels
    that no default schedule fits.

    Parameters
    ----------
    mod : tvm.IRModule
        Module after ``MetaScheduleApplyDatabase`` (kernels with records are scheduled).
    target : tvm.target.Target
        Target whose vector width and core count the schedules use.

    Returns
    -------
    tvm.IRModule
        The module with default schedules applied.
    """
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if is_fused_pointwise(func):
            updates[gv] = default_schedule(func, target)
        elif not bool((func.attrs or {}).get("tirx.is_scheduled", False)):
            scheduled = conv2d.default_schedule(func, target)
            if scheduled is not None:
                updates[gv] = scheduled
    if not updates:
        return mod
    mod = tvm.IRModule(mod.functions, attrs=mod.attrs)  # a copy: passes must not mutate
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def build(
    model: ModelLike,
    *,
    input_shape: Sequence[int] | dict[str, Sequence[int]] | None = None,
    example_inputs: Any = None,
    target: Any = None,
    masks: str | os.PathLike | MaskFile | None = None,
    tuning: Tuning | int | None = None,
    threads: int = 1,
    freq_options: FreqOptions | Mapping[str, Any] | None = None,
    calibrate: Any = None,
    energy: float = 0.99,
    block: int | str = "auto",
    profitability: str = "auto",
    measure_rounds: int = 3,
) -> CompiledModel:
    """Compile a model for the CPU.

    Parameters
    ----------
    model : path, onnx.ModelProto, torch.nn.Module or tvm.IRModule
        The model to compile.
    input_shape : sequence of int or dict, optional
        Static input shape when the model does not fix it (or a torch model has no
        ``example_inputs``).
    example_inputs : torch.Tensor or tuple, optional
        Example inputs for ``torch.export``.
    target : str, dict or tvm.target.Target, optional
        CPU target; default the host (``skylake-avx512`` when it has AVX-512),
        with ``num-cores`` = ``threads``.
    masks : str, pathlib.Path or tvm_freq.masks.MaskFile, optional
        Frozen frequency-band masks. Pruned pointwise convs become truncated DCT ->
        banded dense GEMMs -> IDCT kernels, where that is profitable.
    tuning : Tuning or int, optional
        Records and tuning budget; an int is a trial budget. Default: reuse records, never tune.
    threads : int
        Runtime threads (default 1, single-thread as in the paper).
    freq_options : FreqOptions or dict, optional
        Options of :class:`tvm_freq.passes.FrequencyBandPointwise`: a
        :class:`tvm_freq.passes.FreqOptions`, or a dict of its fields (``max_groups``,
        ``min_saving``, ``force``, ``kernel``; other keys raise ``TypeError``). A dict may
        also give measured ``latencies`` (``{conv ordinal: (dense_us, freq_us)}``, as
        ``profitability="measured"`` measures them).
    calibrate : iterable of arrays, optional
        Calibration batches for profiling-only masks (instead of ``masks``): per channel,
        the shortest zigzag prefix holding ``energy`` of the coefficient energy measured on
        these batches (see :mod:`tvm_freq.calibrate`). The masks are kept in
        ``report.masks``; save them with :func:`tvm_freq.masks.save_masks`.
    energy : float
        Energy fraction kept per channel with ``calibrate``, in ``(0, 1]``.
    block : int or "auto"
        Macroblock size of the masks that ``calibrate`` makes, for every layer
        (``"auto"``: :func:`tvm_freq.calibrate.auto_block` per layer). Only used with
        ``calibrate``: mask files (``masks``) store each layer's block size.
    profitability : {"auto", "model", "macs", "measured"}
        How a masked layer is judged worth rewriting. ``"model"``: the target's kernel
        cost model (:mod:`tvm_freq.cost_model`, stored beside the tuning records as
        ``cost_model.json``; the shipped records have one for ``skylake-avx512`` with one
        and with two cores, and for ``core-avx2`` with one) predicts the dense and the
        frequency kernel's time, and the faster one is kept. ``"macs"``: the frequency
        path must cost fewer MACs than the dense conv.
        ``"auto"`` (default): the model when the target has one, else MACs; the report
        says which (``report.rule``). ``"measured"``: time every masked layer's
        frequency kernel and its dense kernel inside real runs of two extra builds (see
        :func:`measure_latencies`) and keep the faster one; exact for this machine, for
        two more compiles.
    measure_rounds : int
        Interleaved profiling rounds with ``profitability="measured"``.

    Returns
    -------
    CompiledModel
        The compiled model; ``.report`` says what was tuned and, per layer, what was rewritten.
    """
    if profitability not in PROFITABILITY:
        raise ValueError(
            f"profitability must be one of {', '.join(PROFITABILITY)}, got {profitability!r}"
        )
    if measure_rounds < 1:
        raise ValueError(f"measure_rounds must be >= 1, got {measure_rounds}")
    options, latencies = split_freq_options(freq_options)
    if profitability == "measured" and latencies is not None:
        raise ValueError(
            "give freq_options['latencies'] or profitability='measured' (which measures "
            "them), not both"
        )
    if isinstance(tuning, int):
        tuning = Tuning(trials=tuning)
    tuning = tuning or Tuning()
    tgt = resolve_target(target, num_cores=threads)
    imported: ImportedModel = import_model(
        model, input_shape=input_shape, example_inputs=example_inputs
    )
    report = BuildReport(target=str(tgt), source=imported.source)
    mod = imported.mod
    if calibrate is not None:
        if masks is not None:
            raise ValueError("give either masks or calibrate (profiling-only masks), not both")
        from .calibrate import calibrate_energies, masks_from_energies

        if not 0.0 < energy <= 1.0:  # before the calibration run, not after it
            raise ValueError(f"energy must be in (0, 1], got {energy}")
        masks = masks_from_energies(calibrate_energies(mod, calibrate, block=block), energy)
        report.masks = masks
    if masks is not None:
        if profitability == "measured":
            latencies = measure_latencies(
                mod, masks, imported, tgt, tuning, threads, options, rounds=measure_rounds
            )
        cost_model = None
        if profitability in ("auto", "model") and latencies is None:
            cost_model = find_cost_model(tuning, tgt)
            if cost_model is None and profitability == "model":
                raise ValueError(
                    f"no kernel cost model for {target_key(tgt)} in the records; calibrate "
                    "one with benchmarks/calibrate_cost_model.py, or use "
                    "profitability='macs' or 'measured'"
                )
        report.rule = (
            DecisionRule.MEASURED if latencies is not None
            else DecisionRule.MODEL if cost_model is not None else DecisionRule.MACS
        )  # fmt: skip
        mod, report.layers = apply_masks_to_module(
            mod, masks=masks, latencies=latencies, cost_model=cost_model, **options.as_kwargs()
        )
    return _compile(mod, imported, tgt, tuning, threads, report)


#: Values of ``build(profitability=...)``.
PROFITABILITY = ("auto", "model", "macs", "measured")


def find_cost_model(tuning: Tuning, target: tvm.target.Target) -> KernelCostModel | None:
    """The kernel cost model for ``target``: the user's records first, then the shipped ones.

    In each store, a model calibrated on this machine's CPU model (:func:`host_cpu`) comes
    first when ``target`` is this machine's own (:func:`host_target`).

    Parameters
    ----------
    tuning : Tuning
        Says where the records are (``records``, ``use_shipped``).
    target : tvm.target.Target
        Compilation target.

    Returns
    -------
    KernelCostModel or None
        The model, or None when neither store has one for the target.
    """
    roots = [RecordStore(tuning.records).root]  # the same user store the records use
    if tuning.use_shipped:
        roots.append(shipped_records_root())
    # A build for this machine's own target runs here: the model calibrated on this CPU
    # model, where one exists, comes first.
    mcpu = str(target.attrs.get("mcpu", ""))
    cpu = host_cpu() if mcpu == str(host_target().attrs.get("mcpu", "")) else ""
    return load_cost_model(roots, target_key(target), cpu)


def _compile(
    mod: tvm.IRModule,
    imported: ImportedModel,
    tgt: tvm.target.Target,
    tuning: Tuning,
    threads: int,
    report: BuildReport,
) -> CompiledModel:
    """Lower, look up / tune records, schedule and compile a (rewritten) Relax module."""
    mod = lower(mod, tgt, cpu_weight_prepack=tuning.cpu_weight_prepack)
    database = tune(mod, tgt, tuning, report)
    if report.untuned_tasks:
        warnings.warn(
            f"{len(report.untuned_tasks)} of {report.num_tasks} kernels have no tuning record for "
            f"{tgt} and run unscheduled, slow code. Tune them with "
            "build(..., tuning=Tuning(trials=N)) or `tvm-freq compile --trials N`; records are "
            "kept and reused.",
            UntunedWarning,
            stacklevel=3,
        )
    start = time.perf_counter()
    with tgt, database:
        post = [
            relax.transform.MetaScheduleApplyDatabase(enable_warning=False),
            tvm.transform.module_pass(
                lambda m, _ctx: apply_default_schedules(m, tgt), opt_level=0,
                name="ApplyFreqDefaultSchedules",
            ),
        ]  # fmt: skip
        if tuning.cpu_weight_prepack:
            post += [
                relax.transform.SplitLayoutRewritePreproc(),
                relax.transform.LiftTransformParams(),
                relax.transform.FoldConstant(),
            ]
        mod = tvm.transform.Sequential(post)(mod)
    executable = tvm.compile(mod, target=tgt)
    report.compile_seconds = time.perf_counter() - start
    return CompiledModel(
        executable=executable,
        input_names=imported.input_names,
        input_shapes=imported.input_shapes,
        input_dtypes=imported.input_dtypes,
        target=str(tgt),
        threads=threads,
        report=report,
    )
