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
5. ``MetaScheduleApplyDatabase``; frequency-band kernels without a record get their
   default hand-written schedule (never naive loops); the weight layout rewrite
   (folded into the constants); then ``tvm.compile``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tvm
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from .frontend import ImportedModel, ModelLike, import_model
from .records import RecordStore, has_record
from .runtime import CompiledModel
from .target import resolve_target

__all__ = [
    "Tuning", "BuildReport", "UntunedWarning", "apply_default_schedules", "build", "lower", "tune",
    "measure_latencies", "match_layer_kernels",
]  # fmt: skip

class UntunedWarning(UserWarning):
    """Some kernels have no tuning record and run unscheduled (slow) code."""


@dataclass
class Tuning:
    """How :func:`build` uses and extends tuning records.

    Parameters
    ----------
    trials : int
        MetaSchedule trial budget for tasks without records; 0 never tunes.
    retune : bool
        Spend ``trials`` on every task, also those that already have records; the search
        starts from the records in the user's store (more trials, better schedules).
    max_trials_per_task : int, optional
        Cap per task (default: ``trials`` spread evenly over the tasks to tune).
    records : str or pathlib.Path, optional
        User records root (default ``$TVM_FREQ_RECORDS`` or ``~/.cache/tvm_freq/records``).
    use_shipped : bool
        Read the records shipped in ``tvm_freq.schedules``.
    cpu_weight_prepack : bool
        Let schedules pre-pack constant weights into blocked layouts (faster on CPU).
    num_trials_per_iter : int
        Candidates measured per MetaSchedule round.
    builder, runner : str or MetaSchedule Builder / Runner
        ``"local"``, or e.g. ``ms.runner.RPCRunner(...)`` to measure on remote machines.
    timeout_sec : float
        Per-candidate build and run timeout of the local builder and runner; generous,
        because a loaded machine can take tens of seconds just to start a worker.
    progress : bool
        Show a progress bar while tuning.
    """

    trials: int = 0
    retune: bool = False
    max_trials_per_task: int | None = None
    records: str | Path | None = None
    use_shipped: bool = True
    cpu_weight_prepack: bool = True
    num_trials_per_iter: int = 64
    builder: Any = "local"
    runner: Any = "local"
    progress: bool = True
    timeout_sec: float = 180.0

    def __post_init__(self) -> None:
        if self.trials < 0:
            raise ValueError(f"trials must be >= 0, got {self.trials}")
        if self.max_trials_per_task is not None and self.max_trials_per_task < 1:
            raise ValueError("max_trials_per_task must be >= 1")
        if self.num_trials_per_iter < 1:
            raise ValueError("num_trials_per_iter must be >= 1")


@dataclass
class BuildReport:
    """What :func:`build` did: tasks, records, tuning, and per-layer frequency decisions."""

    target: str
    source: str
    num_tasks: int = 0
    tasks_with_records: int = 0
    tasks_tuned: int = 0
    untuned_tasks: list[str] = field(default_factory=list)
    default_scheduled: list[str] = field(default_factory=list)
    trials_run: int = 0
    tune_seconds: float = 0.0
    compile_seconds: float = 0.0
    layers: list[Any] = field(default_factory=list)
    masks: Any = None

    def to_json(self) -> dict:
        """Return a JSON-serialisable dict.

        Returns
        -------
        dict
            The report.
        """
        d = dict(self.__dict__)
        d["layers"] = [x.to_json() if hasattr(x, "to_json") else x for x in self.layers]
        d["masks"] = self.masks.to_dict() if hasattr(self.masks, "to_dict") else None
        return d

    def __str__(self) -> str:
        lines = [
            f"target {self.target} ({self.source} model)",
            f"tasks: {self.num_tasks}, with records: {self.tasks_with_records}, "
            f"tuned now: {self.tasks_tuned} ({self.trials_run} trials, {self.tune_seconds:.0f} s), "
            f"untuned: {len(self.untuned_tasks)}, on a default schedule: "
            f"{len(self.default_scheduled)}",
        ]
        if self.layers:
            from .passes.frequency_band_pointwise import format_layer_table

            lines.append(format_layer_table(self.layers))
        return "\n".join(lines)


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


def _progress_callback(total: int, show: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="tuning", unit="trial", dynamic_ncols=True, disable=not show)
    measured = [0]  # a disabled bar counts nothing, so count here

    @derived_object
    class _Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, results):
            measured[0] += len(measure_candidates)
            best = min(
                (sum(float(x) for x in r.run_secs) / len(r.run_secs) for r in results
                 if r.run_secs),
                default=None,
            )  # fmt: skip
            bar.update(len(measure_candidates))
            if best is not None:
                bar.set_postfix(task=task_id, best_us=f"{best * 1e6:.0f}")

    return _Progress(), bar, measured


def _local(spec: Any, cls: type, timeout: float) -> Any:
    if spec != "local":
        return spec
    if cls is ms.runner.LocalRunner:
        return cls(timeout_sec=timeout, evaluator_config=ms.runner.EvaluatorConfig(
            number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False))  # fmt: skip
    return cls(timeout_sec=timeout)


def _is_freq_task(task: Any) -> bool:
    from tvm_freq.schedules.freq_pointwise import is_fused_pointwise

    return is_fused_pointwise(task.dispatched[0]["main"])


def _has_default_schedule(task: Any) -> bool:
    """Whether a task without a record still gets a hand-written schedule (not naive loops)."""
    from tvm_freq.schedules.conv2d import conv_kind

    return _is_freq_task(task) or conv_kind(task.dispatched[0]["main"]) is not None


def apply_default_schedules(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Give every kernel that is still unscheduled its hand-written default schedule.

    Frequency-band kernels get :mod:`tvm_freq.schedules.freq_pointwise`; dense pointwise
    and depthwise convs get :mod:`tvm_freq.schedules.conv2d`. Kernels that a tuning
    record scheduled (marked ``tirx.is_scheduled``) are left as they are, and so are
    kernels no default schedule fits.

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
    from tvm_freq.schedules import conv2d
    from tvm_freq.schedules.freq_pointwise import default_schedule, is_fused_pointwise

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


@contextlib.contextmanager
def _unnamed_log_handlers_detached():
    """Detach unnamed handlers from MetaSchedule's logger while it configures logging.

    MetaSchedule rebuilds its logging config from the names of the handlers on its logger,
    and crashes on a handler without a name (pytest's log capture adds such handlers, and
    so may any application). They are put back afterwards.
    """
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for h in unnamed:
        logger.removeHandler(h)
    try:
        yield
    finally:
        for h in unnamed:
            logger.addHandler(h)


def _has_record(db: ms.database.Database, task: Any, target: tvm.target.Target) -> bool:
    return has_record(db, task.dispatched[0], target, task.task_name)


def tune(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    tuning: Tuning,
    report: BuildReport | None = None,
) -> ms.database.Database:
    """Tune the tasks of a fused module that have no record yet, and return the lookup database.

    Parameters
    ----------
    mod : tvm.IRModule
        Output of :func:`lower`.
    target : tvm.target.Target
        Compilation target.
    tuning : Tuning
        Budget and records.
    report : BuildReport, optional
        Filled with what was found and done.

    Returns
    -------
    tvm.s_tir.meta_schedule.database.Database
        Database of every record for ``target`` (user and shipped).
    """
    store = RecordStore(tuning.records, use_shipped=tuning.use_shipped)
    lookup = store.union(target)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    missing = [t for t in tasks if not _has_record(lookup, t, target)]
    if report is not None:
        report.num_tasks = len(tasks)
        report.tasks_with_records = len(tasks) - len(missing)
    selected = tasks if tuning.retune else missing
    if selected and tuning.trials > 0:
        db = store.writable(target)  # raises before any tuning if it cannot be written
        per_task = tuning.max_trials_per_task or max(1, tuning.trials // len(selected))
        budget = min(tuning.trials, per_task * len(selected))
        from tvm_freq.schedules.freq_pointwise import sample_knobs, vector_lanes

        lanes = vector_lanes(target)
        plain = [t for t in selected if not _is_freq_task(t)]
        freq = [t for t in selected if _is_freq_task(t)]
        with _unnamed_log_handlers_detached():
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                plain, work_dir=str(store.directory(target))
            )
        if freq:
            # The hand-written schedule is the whole design space; tuning samples its tile
            # sizes (MetaSchedule's generic rules cannot schedule a multi-stage kernel).
            space = ms.space_generator.ScheduleFn(
                lambda sch: sample_knobs(sch, lanes), sch_rules=[], postprocs=[],
                mutator_probs={},
            )  # fmt: skip
            with _unnamed_log_handlers_detached():
                more, more_w = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    freq, work_dir=str(store.directory(target)), space=space,
                    strategy="replay-trace",
                )  # fmt: skip
            contexts, weights = contexts + more, weights + more_w
        progress, bar, measured = _progress_callback(budget, tuning.progress)
        callbacks = [*ms.measure_callback.MeasureCallback.create("default"), progress]
        start = time.perf_counter()
        try:
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(store.directory(target)),
                max_trials_global=budget,
                max_trials_per_task=per_task,
                num_trials_per_iter=min(tuning.num_trials_per_iter, per_task),
                builder=_local(tuning.builder, ms.builder.LocalBuilder, tuning.timeout_sec),
                runner=_local(tuning.runner, ms.runner.LocalRunner, tuning.timeout_sec),
                database=db,
                measure_callbacks=callbacks,
            )
        finally:
            bar.close()
        if report is not None:
            report.tune_seconds = time.perf_counter() - start
            report.tasks_tuned = len(selected)
            report.trials_run = measured[0]
        lookup = store.union(target)
        missing = [t for t in tasks if not _has_record(lookup, t, target)]
    if report is not None:
        report.untuned_tasks = [t.task_name for t in missing if not _has_default_schedule(t)]
        report.default_scheduled = [t.task_name for t in missing if _has_default_schedule(t)]
    return lookup


def measure_latencies(
    mod: tvm.IRModule,
    masks: Any,
    imported: ImportedModel,
    target: tvm.target.Target,
    tuning: Tuning,
    threads: int = 1,
    options: dict | None = None,
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
    options : dict, optional
        Options of :class:`tvm_freq.passes.FrequencyBandPointwise`.
    rounds : int
        Profiling rounds.

    Returns
    -------
    dict
        ``{conv ordinal: (dense_us, freq_us)}`` for every masked layer found in both runs.
    """
    from .passes.frequency_band_pointwise import apply_masks_to_module
    from .runtime import median_profile

    opts = {k: v for k, v in (options or {}).items() if k not in ("latencies", "force")}
    forced, layers = apply_masks_to_module(mod, masks=masks, force=True, **opts)
    # Missing records are tuned (and kept) here once; retuning is left to the final build.
    quiet = Tuning(**{**tuning.__dict__, "progress": False, "retune": False})
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
    dense_prof: Sequence[Any], freq_prof: Sequence[Any], layers: Sequence[Any]
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


def build(
    model: ModelLike,
    *,
    input_shape: Sequence[int] | dict[str, Sequence[int]] | None = None,
    example_inputs: Any = None,
    target: Any = None,
    masks: Any = None,
    tuning: Tuning | int | None = None,
    threads: int = 1,
    freq_options: dict | None = None,
    calibrate: Any = None,
    energy: float = 0.99,
    block: int | str = "auto",
    profitability: str = "macs",
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
    freq_options : dict, optional
        Options of :class:`tvm_freq.passes.FrequencyBandPointwise` (``max_groups``,
        ``min_saving``, ``force``, ``kernel``).
    calibrate : iterable of arrays, optional
        Calibration batches for profiling-only masks (instead of ``masks``): per channel,
        the shortest zigzag prefix holding ``energy`` of the coefficient energy measured on
        these batches (see :mod:`tvm_freq.calibrate`). The masks are kept in
        ``report.masks``; save them with :func:`tvm_freq.masks.save_masks`.
    energy : float
        Energy fraction kept per channel with ``calibrate``, in ``(0, 1]``.
    block : int or "auto"
        Macroblock size with ``calibrate`` (``"auto"``: :func:`tvm_freq.calibrate.auto_block`).
    profitability : {"macs", "measured"}
        How a masked layer is judged worth rewriting. ``"macs"``: its frequency path must
        cost fewer MACs than the dense conv (fast, no measurement). ``"measured"``: time
        every masked layer's frequency kernel and its dense kernel inside real runs of two
        extra builds (see :func:`measure_latencies`) and keep the faster one; this
        catches dense kernels far from their peak and transforms that cost more than
        their MACs, for two more compiles.
    measure_rounds : int
        Interleaved profiling rounds with ``profitability="measured"``.

    Returns
    -------
    CompiledModel
        The compiled model; ``.report`` says what was tuned and, per layer, what was rewritten.
    """
    if profitability not in ("macs", "measured"):
        raise ValueError(f"profitability must be 'macs' or 'measured', got {profitability!r}")
    if measure_rounds < 1:
        raise ValueError(f"measure_rounds must be >= 1, got {measure_rounds}")
    if profitability == "measured" and "latencies" in (freq_options or {}):
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
        from .passes.frequency_band_pointwise import apply_masks_to_module

        options = dict(freq_options or {})
        if profitability == "measured":
            options["latencies"] = measure_latencies(
                mod, masks, imported, tgt, tuning, threads, options, rounds=measure_rounds
            )
        mod, report.layers = apply_masks_to_module(mod, masks=masks, **options)
    return _compile(mod, imported, tgt, tuning, threads, report)


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
