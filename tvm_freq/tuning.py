"""Tuning records and MetaSchedule: :class:`Tuning` and :func:`tune`.

:func:`tune` looks records up in the user's store and the shipped one
(:mod:`tvm_freq.records`) and tunes, within the budget of a :class:`Tuning`, the tasks
that have none. Kernels with a default schedule are tuned in its design space: the
frequency-band kernels in :func:`tvm_freq.schedules.freq_pointwise.design_space` (the
hand-written schedule with its GEMM tiles as decisions), the dense convs, matmuls and
elementwise kernels in :func:`tvm_freq.schedules.conv2d.design_space` (their register
tiles or rows per step as decisions). Every other task is tuned in MetaSchedule's
default space.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from tvm_freq.schedules import conv2d
from tvm_freq.schedules.freq_pointwise import design_space, is_fused_pointwise

from .records import RecordStore, has_record
from .report import BuildReport

__all__ = ["Tuning", "TuningRun", "UntunedWarning", "load_tensor_intrinsics", "tune", "tuning_runs"]


#: Most trials a dense design space gets per point it holds (see :func:`tuning_runs`).
TRIALS_PER_POINT = 4
#: Most tasks per MetaSchedule call: an interrupted run loses at most one call's trials.
TASKS_PER_RUN = 4


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
    shipped_over_defaults : bool
        Use shipped records also for kernels that have a default schedule (dense convs,
        matmuls, frequency kernels). On by default: the shipped records were tuned in
        the default schedules' own design spaces (up to 64 trials per task, the default
        schedule among the candidates; ``schedules/records/README.md``), and they run
        MobileNetV2-224 faster than the defaults alone
        (``benchmarks/bench_records.py``). ``False`` keeps the default schedules
        wherever one fits. Your own records always apply.
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
    shipped_over_defaults: bool = True
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


def _frames_without_source(context: int = 1) -> list[inspect.FrameInfo]:
    """``inspect.stack()`` without source lines or module lookup: frames, files, lines,
    function names (what TVMScript's ``prim_func`` reads from it)."""
    del context
    out, frame = [], sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        out.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name,
                                     None, None))  # fmt: skip
        frame = frame.f_back
    return out


def load_tensor_intrinsics() -> None:
    """Register TVM's tensor intrinsics (``import tvm.s_tir.tensor_intrin``), fast.

    MetaSchedule imports them whenever it makes a tuning context. The import parses
    several hundred TVMScript functions, and each parse calls ``inspect.stack()``, whose
    source lookup scans every loaded module for each frame parsed from a string: 114 s
    on a 2.45 GHz EPYC, paid by the first tuning of every process. The parser uses only
    the frames, so the stack is taken without source lines meanwhile (12 s; the same
    intrinsics, checked by hashing each one's TVMScript). A no-op once loaded.
    """
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    stack = inspect.stack
    inspect.stack = _frames_without_source  # type: ignore[assignment]
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401 - registers the intrinsics
    finally:
        inspect.stack = stack


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params: Any = None) -> Any:
    """Compile one tuning candidate: MetaSchedule's default build, without registering
    every tensor intrinsic of every target first (``import tvm.s_tir.tensor_intrin``
    parses them all: about 28 s in each fresh builder process, and the local builder
    starts fresh processes for every batch) unless the candidate was tensorized."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    if "tensorize" in mod.script(show_meta=False):
        load_tensor_intrinsics()
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _local(spec: Any, cls: type, timeout: float) -> Any:
    if spec != "local":
        return spec
    if cls is ms.runner.LocalRunner:
        return cls(timeout_sec=timeout, evaluator_config=ms.runner.EvaluatorConfig(
            number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False))  # fmt: skip
    return cls(timeout_sec=timeout, f_build=build_candidate)


def _default_schedule_fits(mod: tvm.IRModule) -> bool:
    """Whether a workload without a record still gets a hand-written schedule."""
    func = mod["main"]
    return is_fused_pointwise(func) or conv2d.conv_kind(func) is not None


def _no_default_schedule(mod: tvm.IRModule) -> bool:
    return not _default_schedule_fits(mod)


def _has_default_schedule(task: Any) -> bool:
    return _default_schedule_fits(task.dispatched[0])


def _is_freq_task(task: Any) -> bool:
    return is_fused_pointwise(task.dispatched[0]["main"])


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


@dataclass(frozen=True)
class TuningRun:
    """One MetaSchedule ``tune_tasks`` call of :func:`tune`: its records are committed when
    it ends (MetaSchedule joins the first round's measurements only after every task of
    the call was sent), so a call holds at most :data:`TASKS_PER_RUN` tasks.

    Parameters
    ----------
    tasks : list
        Extracted tasks (``ms.ExtractedTask``).
    space : object
        MetaSchedule space generator (or its name).
    strategy : str
        Search strategy.
    cap : int
        Trials per task.
    """

    tasks: list[Any]
    space: Any
    strategy: str
    cap: int


def tuning_runs(tasks: list[Any], target: tvm.target.Target, per_task: int) -> list[TuningRun]:
    """Split the tasks to tune into :class:`TuningRun` calls by space and trial cap.

    Kernels with a default schedule are tuned in its design space (their tiles as
    decisions, the default among them), so tuning can only improve on it. The fused
    frequency kernels pass sampled tiles to their splits (trace replay varies them); the
    dense schedules derive divisors and padding from theirs in Python, so each candidate
    reruns the schedule (replay-func). Other kernels: MetaSchedule's generic space.
    A dense space of ``n`` points gets at most ``TRIALS_PER_POINT * n`` trials:
    replay-func draws with repetition, and more draws would only re-measure the same
    schedules.

    Parameters
    ----------
    tasks : list
        Extracted tasks to tune.
    target : tvm.target.Target
        Compilation target.
    per_task : int
        Trials per task (the cap of every run).

    Returns
    -------
    list of TuningRun
        The calls, in order, each of at most :data:`TASKS_PER_RUN` tasks.
    """
    freq = [t for t in tasks if _is_freq_task(t)]
    dense = [t for t in tasks if not _is_freq_task(t) and _has_default_schedule(t)]
    plain = [t for t in tasks if not _has_default_schedule(t)]
    groups: list[tuple[list[Any], Any, str, int]] = [
        (plain, "post-order-apply", "evolutionary", per_task),
        (freq, design_space(target), "replay-trace", per_task),
    ]
    knobs = conv2d.knobs_for(target)
    caps: dict[int, list[Any]] = {}
    for t in dense:
        points = conv2d.design_space_size(t.dispatched[0]["main"], knobs)
        caps.setdefault(min(per_task, TRIALS_PER_POINT * points), []).append(t)
    groups += [(group, conv2d.design_space(target), "replay-func", cap)
               for cap, group in sorted(caps.items())]  # fmt: skip
    return [
        TuningRun(group[i : i + TASKS_PER_RUN], space, strategy, cap)
        for group, space, strategy, cap in groups
        for i in range(0, len(group), TASKS_PER_RUN)
    ]


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
    # Shipped records lose to the default schedules where one fits (see Tuning).
    shipped_filter = None if tuning.shipped_over_defaults else _no_default_schedule
    lookup = store.union(target, shipped_filter=shipped_filter)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    missing = [t for t in tasks if not _has_record(lookup, t, target)]
    if report is not None:
        report.num_tasks = len(tasks)
        report.tasks_with_records = len(tasks) - len(missing)
    selected = tasks if tuning.retune else missing
    if selected and tuning.trials > 0:
        db = store.writable(target)  # raises before any tuning if it cannot be written
        per_task = tuning.max_trials_per_task or max(1, tuning.trials // len(selected))
        work_dir = str(store.directory(target))
        runs = tuning_runs(selected, target, per_task)
        budget = min(tuning.trials, sum(len(run.tasks) * run.cap for run in runs))
        progress, bar, measured = _progress_callback(budget, tuning.progress)
        callbacks = [*ms.measure_callback.MeasureCallback.create("default"), progress]
        start = time.perf_counter()
        try:
            for run in runs:
                left = budget - measured[0]
                if left <= 0:
                    break
                load_tensor_intrinsics()  # before MetaSchedule imports them, slowly
                with _unnamed_log_handlers_detached():
                    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                        run.tasks, work_dir=work_dir, space=run.space, strategy=run.strategy
                    )
                ms.tune.tune_tasks(
                    tasks=contexts,
                    task_weights=weights,
                    work_dir=work_dir,
                    max_trials_global=min(left, run.cap * len(run.tasks)),
                    max_trials_per_task=run.cap,
                    num_trials_per_iter=min(tuning.num_trials_per_iter, run.cap),
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
        lookup = store.union(target, shipped_filter=shipped_filter)
        missing = [t for t in tasks if not _has_record(lookup, t, target)]
    if report is not None:
        report.untuned_tasks = [t.task_name for t in missing if not _has_default_schedule(t)]
        report.default_scheduled = [t.task_name for t in missing if _has_default_schedule(t)]
    return lookup


