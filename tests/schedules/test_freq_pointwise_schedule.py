"""The fused kernel's schedule: numerics for every knob, target gating, the tuning space."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from _host import runnable
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm_freq.kernels import freq_pointwise as K
from tvm_freq.schedules import freq_pointwise as S

import tvm_freq.target

AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1})


def _layer(n, cin, cout, h, w, k, seed=0, bias=True, clip=None):
    rng = np.random.default_rng(seed)
    kin = rng.integers(0, k * k + 1, cin)
    kout = rng.integers(1, k * k + 1, cout)
    plan = K.align_plan(K.plan_bands(kin, kout, k, max_groups=4), 16)
    groups = [(g.size, g.cin, g.cout) for g in plan.groups]
    func = K.fused_pointwise(n, cin, cout, h, w, k, groups, bias=bias, clip=clip)
    x = rng.standard_normal((n, cin, h, w)).astype("float32")
    wt = rng.standard_normal((cout, cin)).astype("float32")
    b = rng.standard_normal(cout).astype("float32") if bias else None
    ref = K.freq_pointwise_ref(x, wt, b, plan)
    if clip is not None:
        ref = np.clip(ref, *clip)
    return func, [x, *K.fused_constants(plan, wt, b)], ref


def _run(func, args, shape, target=AVX512):
    ex = tvm.compile(tvm.IRModule({"main": func}), target=runnable(target))
    out = tvm.runtime.tensor(np.zeros(shape, "float32"))
    ex.mod["main"](*[tvm.runtime.tensor(a) for a in args], out)
    return out.numpy()


# One block wide (7x7, k=7), several blocks (14x14, k=7), padding (10x9, k=4), k=2.
LAYERS = [(1, 48, 32, 7, 7, 7), (1, 24, 48, 14, 14, 7), (2, 16, 32, 10, 9, 4),
          (1, 16, 16, 8, 8, 2)]  # fmt: skip


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("knobs", [S.FusedKnobs(), S.FusedKnobs(rows=1, col_vectors=1),
                                   S.FusedKnobs(lanes=8, rows=4, parallel=True)])  # fmt: skip
def test_default_schedule_is_exact(layer, knobs):
    func, args, ref = _layer(*layer, clip=(0.0, 6.0))
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    S.schedule_fused_pointwise(sch, knobs)
    out = _run(sch.mod["main"], args, ref.shape)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("tile", ["block", "row", "image"])
@pytest.mark.parametrize("layer", [(1, 24, 48, 16, 16, 4), (1, 20, 36, 14, 14, 7)])
def test_every_tile_is_exact(layer, tile):
    """Each unit of work, with the epilogue writing whole image rows (row and image
    tiles) and the transforms' micro-kernels spanning several blocks."""
    func, args, ref = _layer(*layer, clip=(0.0, 6.0))
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    S.schedule_fused_pointwise(sch, S.FusedKnobs(tile=tile))
    out = _run(sch.mod["main"], args, ref.shape)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_transform_tile_hides_latency_within_registers():
    lo, hi = S.TRANSFORM_ACCUMULATORS
    # 5 channels (prime) of 7 blocks with 3 vectors each: spread over blocks instead.
    assert S._transform_tile(5, 7, 3, 4) == (1, 7)
    # Enough channels: no blocks needed; the fewest pairs that reach the lower bound.
    assert S._transform_tile(16, 49, 2, 4) == (4, 1)
    for channels, blocks, vectors in [(5, 7, 3), (11, 7, 1), (16, 49, 2), (3, 1, 1), (1, 1, 8)]:
        cu, pu = S._transform_tile(channels, blocks, vectors, 4)
        assert channels % cu == 0 and blocks % pu == 0 and cu <= 4
        assert cu * pu * vectors <= max(hi, vectors)


def _parallel_extents(func) -> list[int]:
    return [int(e) for e in re.findall(r"T\.parallel\((?:T\.int64\()?(\d+)", func.script())]


@pytest.mark.parametrize("layer", [(1, 48, 96, 7, 7, 7), (1, 24, 48, 14, 14, 7)])
def test_threads_split_real_work(layer):
    """With two cores some loop of more than one iteration runs in parallel: the tiles,
    or, when the image is one tile (7x7 at k=7), the strips of output channels."""
    func, args, ref = _layer(*layer, clip=(0.0, 6.0))
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
    scheduled = S.default_schedule(func, target)
    assert any(e > 1 for e in _parallel_extents(scheduled))
    out = _run(scheduled, args, ref.shape, target=target)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_one_tile_spreads_every_stage_over_threads():
    """A 7x7 map at k=7 is one tile: each input run's DCT and the epilogue run in
    parallel over channels too, not only the GEMM strips (with them serial, 7x7 layers ran
    no faster on two threads than on one)."""
    from tvm.tirx import ForKind

    func, args, ref = _layer(1, 48, 96, 7, 7, 7, clip=(0.0, 6.0))
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
    scheduled = S.default_schedule(func, target)
    sch = s_tir.Schedule(scheduled)
    n_in = len(func.attrs[K.ATTR_IN_CHUNKS]) // 2
    stages = [f"{K.dct_raw_stage(j)}_update" for j in range(n_in)] + [K.STAGE_EPILOGUE]
    for name in stages:
        kinds = [sch.get(lp).kind for lp in sch.get_loops(sch.get_sblock(name))]
        assert ForKind.PARALLEL in kinds, name
    out = _run(scheduled, args, ref.shape, target=target)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_default_schedule_marks_kernel_scheduled_and_vectorises():
    func, args, ref = _layer(1, 48, 32, 7, 7, 7)
    assert S.is_fused_pointwise(func)
    scheduled = S.default_schedule(func, AVX512)
    assert not S.is_fused_pointwise(scheduled)  # marked: nobody schedules it twice
    text = scheduled.script()
    assert "T.vectorized" in text and "T.unroll" in text and "T.parallel" not in text
    multi = S.default_schedule(func, tvm.target.Target({"kind": "llvm", "num-cores": 2}))
    assert "T.parallel" in multi.script()
    out = _run(scheduled, args, ref.shape)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_vector_width_is_gated_by_target():
    assert S.vector_lanes(AVX512) == 16
    assert S.vector_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})) == 8
    assert S.vector_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"})) == 4
    with pytest.raises(ValueError, match="tile sizes"):
        S.FusedKnobs(rows=0)


def test_tuning_space_samples_valid_schedules():
    """Every sampled point of the MetaSchedule design space computes the same answer."""
    func, args, ref = _layer(1, 24, 48, 14, 14, 7, seed=3)
    seen = set()
    for seed in range(1, 7):
        sch = s_tir.Schedule(tvm.IRModule({"main": func}), seed=seed)
        S.sample_knobs(sch, lanes=16)
        decisions = tuple(int(v) for v in sch.trace.decisions.values())
        seen.add(decisions)
        out = _run(sch.mod["main"], args, ref.shape)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert len(seen) > 1  # the knobs are real decisions, not constants


def _vector_widths(func):
    """``(width, name of the block it computes)`` of every vectorised loop."""
    text = func.script()
    found = []
    for m in re.finditer(r"T\.vectorized\((\d+)\)", text):
        block = re.search(r'T\.sblock\("(\w+)"', text[m.end() :])
        found.append((int(m.group(1)), block.group(1) if block else ""))
    return found


@pytest.mark.parametrize("k", [6, 7])
def test_vectors_are_whole_machine_vectors(k):
    """Vectors of 40 or 48 floats made LLVM keep the DCT's accumulators in memory (3-4x
    slower): every vectorised loop but the epilogue's image rows is a power of two."""
    # 34 live coefficients pad to 40; k=6 pads the IDCT's 36 pixels to 48.
    func = K.fused_pointwise(1, 64, 48, 7, 7, k, [(20, 64, 48), (14, 48, 32)])
    found = _vector_widths(S.default_schedule(func, AVX512))
    widths = [n for n, name in found if name != "epilogue"]
    # Stage names without chunk numbers and the suffixes that scheduling adds.
    stages = {re.sub(r"[\d_]*(_init|_update|_ax\d+)?$", "", name) for _, name in found}
    assert stages >= {"dct_raw", "dct", "gemm", "freq_out", "idct"}, found
    assert all(n & (n - 1) == 0 and n <= 16 for n in widths), found


def test_tuning_space_parallelises_like_the_default_schedule(tensor_intrinsics):
    """Tuned kernels run on every core the target has, as the default schedule does."""
    func, args, ref = _layer(1, 24, 48, 14, 14, 7, seed=3)
    for cores, parallel in ((2, True), (1, False)):
        target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": cores})
        assert S.knobs_for(target).parallel == parallel
        ctx = ms.TuneContext(mod=tvm.IRModule({"main": func}), target=target,
                             space_generator=S.design_space(target), rand_state=1)  # fmt: skip
        (sch,) = ctx.generate_design_space()
        kinds = [inst.kind.name for inst in sch.trace.insts]
        assert ("Parallel" in kinds) == parallel
        assert ("T.parallel" in sch.mod["main"].script()) == parallel
        assert ("T.parallel" in S.default_schedule(func, target).script()) == parallel
    out = _run(sch.mod["main"], args, ref.shape)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_knobs_for_feeds_default_schedule_and_space():
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "core-avx2", "num-cores": 1})
    assert S.knobs_for(avx2) == S.FusedKnobs(lanes=8, rows=6, parallel=False)
    assert S.knobs_for(AVX512) == S.FusedKnobs(lanes=16, rows=12, parallel=False)
    assert S.vector_lanes is tvm_freq.target.vector_lanes  # re-exported


def _unrolled_loops_around(func, prefix):
    """Extents of the unrolled loops that enclose a block whose name starts with ``prefix``."""
    found = []

    def visit(node, unrolled):
        if isinstance(node, tvm.tirx.For):
            inner = [*unrolled, int(node.extent)] if node.kind == tvm.tirx.ForKind.UNROLLED \
                else unrolled  # fmt: skip
            visit(node.body, inner)
        elif isinstance(node, s_tir.SBlockRealize):
            if node.block.name_hint.startswith(prefix):
                found.append(unrolled)
            visit(node.block.body, unrolled)
            if node.block.init is not None:
                visit(node.block.init, unrolled)
        elif isinstance(node, tvm.tirx.SeqStmt):
            for s in node.seq:
                visit(s, unrolled)
        elif hasattr(node, "body"):
            visit(node.body, unrolled)
        elif isinstance(node, tvm.tirx.IfThenElse):
            visit(node.then_case, unrolled)
            if node.else_case is not None:
                visit(node.else_case, unrolled)

    visit(func.body, [])
    return found


@pytest.mark.parametrize("layer", [(1, 48, 32, 7, 7, 7), (1, 24, 48, 14, 14, 7)])
def test_output_masking_reads_gemm_results_in_a_rolled_loop(layer):
    """Unrolled over coefficients, the masking stage read every GEMM result at a constant
    index; LLVM then kept all of them in registers across the later groups' GEMMs, whose
    accumulators went to the stack."""
    func, args, ref = _layer(*layer)
    scheduled = S.default_schedule(func, AVX512)
    found = _unrolled_loops_around(scheduled, K.STAGE_FREQ_OUT)
    assert found and all(loops == [] for loops in found), found
    gemms = _unrolled_loops_around(scheduled, "gemm")
    assert gemms and all(loops for loops in gemms), gemms  # the micro-kernels still unroll
    out = _run(scheduled, args, ref.shape)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("layer", [(1, 48, 32, 7, 7, 7), (1, 24, 48, 14, 14, 7)])
def test_masking_vectors_stop_at_each_runs_coefficients(layer):
    """Each input run's DCT holds need_j coefficients and is read through min(q, need_j - 1);
    vectorised over every q, that clamp made each vector a gather. Each run's masking loop
    is split at need_j, only the part below it vectorised."""
    func, args, ref = _layer(*layer)
    scheduled = S.default_schedule(func, AVX512)
    text = scheduled.script()
    qpad = int(re.search(r"dct_basis: T\.Buffer\(\(\d+, (\d+)\)", func.script()).group(1))
    needs = [int(m.group(1)) for m in
             re.finditer(r"dct_raw\d+ = T\.sblock_alloc_buffer\(\(\d+, \d+, (\d+)\)", text)]
    short = [q for q in needs if q < qpad]
    assert short, (needs, qpad)  # the case exercises runs shorter than the widest
    for q in short:
        assert f"in range({q}, {qpad}):" in text, (q, qpad)
    out = _run(scheduled, args, ref.shape)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
