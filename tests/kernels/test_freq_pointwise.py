"""Frequency-band kernels against their NumPy references, and the references against the math."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm_freq.kernels import freq_pointwise as K

from tvm_freq.dct import block_dct_np, block_idct_np

TARGET = tvm.target.Target({"kind": "llvm"})
# (k, H, W): every block size the paper and the compiler use, with sizes k does not divide.
CASES = [(2, 6, 5), (3, 7, 5), (4, 8, 8), (4, 9, 6), (7, 7, 7), (7, 9, 8), (8, 10, 9)]


def _masked_direct(x, w, b, kin, kout, k):
    """DCT -> per-channel masks -> 1x1 conv -> per-channel masks -> IDCT, with dct.py."""
    c = block_dct_np(x, k)
    c = c * (np.arange(k * k)[None, :] < np.asarray(kin)[:, None])[None, :, None, None, :]
    y = np.einsum("oc,ncxyq->noxyq", w, c)
    y = y * (np.arange(k * k)[None, :] < np.asarray(kout)[:, None])[None, :, None, None, :]
    return block_idct_np(y, k, x.shape[2:]) + b.reshape(1, -1, 1, 1)


def _masks(rng, k, cin, cout):
    kin = rng.integers(0, k * k + 1, cin)
    kout = rng.integers(0, k * k + 1, cout)
    kin[0], kin[1] = k * k, 0  # channels keeping all and no coefficients
    kout[0], kout[-1] = 0, k * k
    return kin, kout


@pytest.mark.parametrize("k,h,w", CASES)
def test_reference_equals_masked_dct_conv_idct(k, h, w):
    rng = np.random.default_rng(k * 100 + h)
    x, wt = rng.standard_normal((2, 6, h, w)), rng.standard_normal((5, 6))
    b = rng.standard_normal(5)
    kin, kout = _masks(rng, k, 6, 5)
    for groups in (1, 2, 4):
        plan = K.plan_bands(kin, kout, k, groups)
        got = K.freq_pointwise_ref(x, wt, b, plan)
        # float32 bases (what the kernels use) bound the agreement at ~1e-7.
        np.testing.assert_allclose(got, _masked_direct(x, wt, b, kin, kout, k), atol=1e-6)


@pytest.mark.parametrize("k,h,w", CASES)
def test_unpruned_reference_is_the_dense_conv(k, h, w):
    rng = np.random.default_rng(k)
    x, wt = rng.standard_normal((1, 4, h, w)), rng.standard_normal((3, 4))
    plan = K.plan_bands([k * k] * 4, [k * k] * 3, k)
    got = K.freq_pointwise_ref(x, wt, None, plan)
    np.testing.assert_allclose(got, np.einsum("oc,nchw->nohw", wt, x), atol=1e-6)


def test_plan_groups_are_channel_prefixes_and_cover_every_kept_band():
    kin, kout = [16, 3, 0, 9, 16, 1], [5, 16, 2]
    plan = K.plan_bands(kin, kout, 4, max_groups=3)
    assert list(plan.kin_sorted) == sorted(kin, reverse=True)
    assert list(plan.kout_sorted) == sorted(kout, reverse=True)
    covered = [q for g in plan.groups for q in range(g.n0, g.n1)]
    assert covered == list(range(max(covered) + 1))
    # Every (q, c) pair that is kept lies inside its group's prefix.
    for g in plan.groups:
        assert g.cin == int((np.asarray(kin) > g.n0).sum())
        assert g.cout == int((np.asarray(kout) > g.n0).sum())
    assert len(plan.groups) <= 3
    # A channel that keeps nothing adds no group; nothing kept means no groups at all.
    assert K.plan_bands([0, 0], [4, 4], 2).groups == ()


def _run(func, *arrays, out_shape):
    ex = tvm.compile(tvm.IRModule({"main": func}), target=TARGET)
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"))
    ex.mod["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays], out)
    return out.numpy()


@pytest.mark.parametrize("k,h,w", CASES)
def test_tir_kernels_match_references(k, h, w):
    rng = np.random.default_rng(7 * k + w)
    n, cin, cout = 2, 5, 4
    x = rng.standard_normal((n, cin, h, w)).astype("float32")
    wt = rng.standard_normal((cout, cin)).astype("float32")
    kin, kout = _masks(rng, k, cin, cout)
    plan = K.plan_bands(kin, kout, k, max_groups=2)
    _, _, p = K._blocks(n, h, w, k)
    total = np.zeros((n, cout, h, w))
    for g in plan.groups:
        basis, perm = K.dct_group_basis(plan, g), np.asarray(plan.perm_in[: g.cin], "int32")
        xf = _run(K.truncated_dct(n, cin, h, w, k, g.size, g.cin), x, basis, perm,
                  out_shape=(g.size, g.cin, p))  # fmt: skip
        np.testing.assert_allclose(xf, K.truncated_dct_ref(x, basis, perm, k), atol=1e-5)
        wg = K.group_weight(plan, wt, g)
        yf = _run(K.band_gemm(g.size, g.cout, g.cin, p), wg, xf, out_shape=(g.size, g.cout, p))
        np.testing.assert_allclose(yf, K.band_gemm_ref(wg, xf), rtol=1e-5, atol=1e-5)
        bo, slot = K.idct_group_basis(plan, g)
        y = _run(K.truncated_idct(n, cout, h, w, k, g.size, g.cout), yf, bo, slot,
                 out_shape=(n, cout, h, w))  # fmt: skip
        np.testing.assert_allclose(y, K.truncated_idct_ref(yf, bo, slot, k, n, h, w), atol=1e-5)
        total += y
    ref = K.freq_pointwise_ref(x, wt, None, plan)
    np.testing.assert_allclose(total, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_kernels_are_unscheduled_prim_funcs():
    f = K.truncated_dct(1, 4, 8, 8, 4, 3, 2)
    assert isinstance(f, tvm.tirx.PrimFunc)
    assert "tirx.is_scheduled" not in (f.attrs or {})


def test_bad_masks_rejected():
    with pytest.raises(ValueError, match="kin must be"):
        K.plan_bands([17], [1], 4)
    with pytest.raises(ValueError, match="max_groups"):
        K.plan_bands([1], [1], 4, max_groups=0)


def _fused_case(k, h, w, seed, align=16, bias=True, clip=None):
    rng = np.random.default_rng(seed)
    n, cin, cout = 2, 6, 20
    x = rng.standard_normal((n, cin, h, w)).astype("float32")
    wt = rng.standard_normal((cout, cin)).astype("float32")
    b = rng.standard_normal(cout).astype("float32") if bias else None
    kin, kout = _masks(rng, k, cin, cout)
    plan = K.align_plan(K.plan_bands(kin, kout, k, max_groups=3), align)
    groups = [(g.size, g.cin, g.cout) for g in plan.groups]
    func = K.fused_pointwise(n, cin, cout, h, w, k, groups, bias=bias, clip=clip)
    return x, wt, b, plan, groups, func


@pytest.mark.parametrize("k,h,w", CASES)
def test_fused_kernel_matches_its_reference_and_the_staged_math(k, h, w):
    x, wt, b, plan, groups, func = _fused_case(k, h, w, seed=11 * k + h)
    consts = K.fused_constants(plan, wt, b)
    out = _run(func, x, *consts, out_shape=(2, 20, h, w))
    ref = K.fused_pointwise_ref(x, consts, groups, k)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # Aligned output prefixes and the single wide DCT do not change the answer.
    staged = K.freq_pointwise_ref(x, wt, b, plan)
    np.testing.assert_allclose(ref, staged, rtol=1e-9, atol=1e-9 * np.abs(staged).max())
    direct = _masked_direct(x.astype(np.float64), wt, b, plan.kin, plan.kout, k)
    # float32 bases: agreement to float32 precision.
    np.testing.assert_allclose(ref, direct, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_fused_kernel_clip_epilogue_and_no_bias():
    x, wt, _, plan, _, func = _fused_case(4, 8, 8, seed=5, bias=False, clip=(0.0, 6.0))
    out = _run(func, x, *K.fused_constants(plan, wt), out_shape=(2, 20, 8, 8))
    ref = np.clip(K.freq_pointwise_ref(x, wt, None, plan), 0, 6)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert (out == 6).any() and (out == 0).any()  # the clamp really acted


def test_fused_kernel_is_unscheduled_and_marked():
    f = K.fused_pointwise(1, 4, 16, 8, 8, 4, [(3, 4, 16)])
    assert "tirx.is_scheduled" not in (f.attrs or {})
    assert str(f.attrs["tvm_freq.kernel"]) == K.FUSED_KERNEL
    with pytest.raises(ValueError, match="at least one band group"):
        K.fused_pointwise(1, 4, 16, 8, 8, 4, [])
    with pytest.raises(ValueError, match="multiple"):
        K.align_plan(K.plan_bands([1], [1], 2), 0)


def test_fused_transforms_are_chunked_by_channel_run():
    """Each input run's DCT computes only the coefficients its channels can keep, and each
    output run's IDCT reduces over only those: the stage shapes follow channel_chunks."""
    groups = [(3, 64, 48), (5, 40, 32), (9, 12, 16)]
    f = K.fused_pointwise(1, 64, 48, 14, 14, 7, groups)
    ins, outs = K.channel_chunks(groups)
    assert ins == [(0, 12, 17), (12, 40, 8), (40, 64, 3)]
    assert outs == [(0, 16, 17), (16, 32, 8), (32, 48, 3)]
    assert [int(b) for b in f.attrs[K.ATTR_IN_CHUNKS]] == [0, 12, 12, 40, 40, 64]
    names = [g(j) for g in (K.dct_raw_stage, K.freq_out_stage) for j in range(3)]
    shapes = _stage_shapes(f, names)
    p, qpad = 4, K.round_up(17, K.COEF_ALIGN)
    assert shapes[K.dct_raw_stage(0)] == [12, p, qpad]
    assert shapes[K.dct_raw_stage(1)] == [28, p, 8]  # 8 coefficients: one whole vector
    assert shapes[K.dct_raw_stage(2)] == [24, p, 8]
    assert [shapes[K.freq_out_stage(j)] for j in range(3)] == [[p, 16, 17], [p, 16, 8],
                                                               [p, 16, 3]]  # fmt: skip
    # Each group's GEMM is cut at the output runs it reaches: run 0 (channels 0-15) reads
    # all three groups, run 2 (channels 32-47) only group 0.
    pairs = [int(v) for v in f.attrs[K.ATTR_GEMMS]]
    assert list(zip(pairs[0::2], pairs[1::2], strict=True)) == [(0, 0), (1, 0), (2, 0), (0, 1),
                                                                 (1, 1), (0, 2)]  # fmt: skip
    gemm = _stage_shapes(f, [K.gemm_stage(1, 0), K.gemm_stage(0, 2)])
    assert gemm == {K.gemm_stage(1, 0): [p, 5, 16], K.gemm_stage(0, 2): [p, 3, 16]}


def _stage_shapes(func, names):
    """Shape of the buffer each named block of ``func`` writes."""
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    return {n: [int(d) for d in sch.get(sch.get_sblock(n)).writes[0].source.shape] for n in names}


def test_packed_weights_are_contiguous_column_blocks():
    """The fused kernel's weights: blocks of W_BLOCK output channels, each [Cin, W_BLOCK]
    contiguous, the padded channels zero; unpacking restores the matrix."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 37)).astype("float32")  # [Cin, Cout], Cout not a multiple
    wp = K.pack_weight(w)
    blocks = -(-37 // K.W_BLOCK)
    assert wp.shape == (blocks, 5, K.W_BLOCK) and wp.flags["C_CONTIGUOUS"]
    for o in range(37):
        np.testing.assert_array_equal(wp[o // K.W_BLOCK, :, o % K.W_BLOCK], w[:, o])
    assert not wp[-1, :, 37 % K.W_BLOCK :].any()
    np.testing.assert_array_equal(K.unpack_weight(wp)[:, :37], w)
    f = K.fused_pointwise(1, 5, 37, 8, 8, 4, [(3, 5, 48)])
    assert f'{K.PARAM_WEIGHT}: T.Buffer((3, 5, {K.W_BLOCK}), "float32")' in f.script()
