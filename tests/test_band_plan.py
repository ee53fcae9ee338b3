"""What the frequency kernels compute (:func:`tvm_freq.band_plan.kernel_macs`)."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_freq.band_plan import (
    COEF_ALIGN,
    COUT_ALIGN,
    PIX_ALIGN,
    align_plan,
    channel_chunks,
    kernel_macs,
    plan_bands,
    round_up,
)
from tvm_freq.dct import num_blocks
from tvm_freq.macs import pointwise_macs


def test_unpadded_layer_counts_the_ideal_bands():
    """Every prefix aligned and one group: the kernels compute exactly the ideal bands."""
    kin = kout = [16] * 32
    _, real = kernel_macs(kin, kout, 4, (1, 32, 8, 8), 32)
    ideal = pointwise_macs(8, 8, 4, kin, kout)
    assert (real.dense, real.dct, real.gemm, real.idct) == (
        ideal.dense, ideal.dct, ideal.gemm, ideal.idct,
    )  # fmt: skip


@pytest.mark.parametrize("fused", [True, False])
def test_padding_only_adds_work(fused):
    rng = np.random.default_rng(0)
    kin = rng.integers(0, 17, size=24).tolist()
    kout = rng.integers(1, 17, size=40).tolist()
    plan, real = kernel_macs(kin, kout, 4, (1, 24, 14, 14), 40, fused=fused)
    ideal = pointwise_macs(14, 14, 4, kin, kout)
    assert real.dense == ideal.dense
    assert real.gemm >= ideal.gemm and real.dct >= ideal.dct
    if fused:  # group output prefixes are whole vectors (or all channels)
        assert all(g.cout % COUT_ALIGN == 0 or g.cout == 40 for g in plan.groups)


def test_the_pass_decides_with_the_same_count():
    """The Relax pass's per-layer MACs are kernel_macs' (one definition)."""
    import torch

    from tvm_freq.frontend import import_model
    from tvm_freq.masks import LayerMask, MaskFile
    from tvm_freq.passes.frequency_band_pointwise import plan_layers

    conv = torch.nn.Sequential(torch.nn.Conv2d(24, 40, 1)).eval()
    mod = import_model(conv, example_inputs=(torch.zeros(1, 24, 14, 14),)).mod
    rng = np.random.default_rng(1)
    kin = rng.integers(0, 17, size=24).tolist()
    lm = LayerMask("0", 0, (40, 24, 1, 1), 4, kin, [16] * 40)
    decisions = plan_layers(mod, MaskFile((lm,), 1))
    _, real = kernel_macs(kin, [16] * 40, 4, (1, 24, 14, 14), 40)
    d = decisions[0]
    assert (d.dense_macs, d.dct_macs, d.gemm_macs, d.idct_macs) == (
        real.dense, real.dct, real.gemm, real.idct,
    )  # fmt: skip


def test_channel_chunks_cover_what_each_group_reads():
    """Each sorted channel a group reads lies in one chunk whose need covers the group, and
    no chunk transforms more coefficients than its channels' widest group needs."""
    rng = np.random.default_rng(2)
    kin = rng.integers(0, 50, size=40).tolist()
    kout = rng.integers(0, 50, size=56).tolist()
    plan = align_plan(plan_bands(kin, kout, 7), COUT_ALIGN)
    groups = [(g.size, g.cin, g.cout) for g in plan.groups]
    ins, outs = channel_chunks(groups)
    for chunks, side in ((ins, 1), (outs, 2)):
        covered = [c for lo, hi, _ in chunks for c in range(lo, hi)]
        assert covered == list(range(len(covered)))  # contiguous, ascending, no overlap
        assert len(covered) == max(g[side] for g in groups)
        end = 0
        needs = {}
        for g in groups:
            end += g[0]
            for c in range(g[side]):
                needs[c] = end  # the last (widest-coefficient) group reading c
        for lo, hi, need in chunks:
            assert all(needs[c] == need for c in range(lo, hi))
        assert [n for _, _, n in chunks] == sorted((n for _, _, n in chunks), reverse=True)


def test_chunked_transforms_count_only_the_kept_coefficients():
    """The fused DCT / IDCT per chunk: between the ideal per-channel count and the old
    worst-case count of every channel transforming every coefficient."""
    rng = np.random.default_rng(3)
    kin = rng.integers(0, 50, size=64).tolist()
    kout = rng.integers(0, 50, size=96).tolist()
    plan, real = kernel_macs(kin, kout, 7, (1, 64, 14, 14), 96)
    ideal = pointwise_macs(14, 14, 7, kin, kout)
    qtot = sum(g.size for g in plan.groups)
    blocks = num_blocks(14, 14, 7)
    worst_dct = blocks * 49 * max(g.cin for g in plan.groups) * round_up(qtot, COEF_ALIGN)
    worst_idct = blocks * round_up(49, PIX_ALIGN) * 96 * qtot
    assert ideal.dct <= real.dct < worst_dct
    assert ideal.idct <= real.idct < worst_idct
