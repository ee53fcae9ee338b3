"""Default schedules of dense pointwise and depthwise convs: which kernels, and exactness."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _host import runnable
from tvm_freq.schedules.conv2d import ConvKind, ConvKnobs, conv_kind, knobs_for

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.frontend import import_model
from tvm_freq.pipeline import lower
from tvm_freq.target import host_target

# knobs_for(core-avx2), spelled out: the tests pin what AVX2 hosts get.
_AVX2 = ConvKnobs(lanes=8, rows=6, col_vectors=2)


def _kernels(net: torch.nn.Module, shape) -> dict[str, ConvKind | None]:
    mod = lower(import_model(net.eval(), input_shape=shape).mod, host_target())
    return {gv.name_hint: conv_kind(f) for gv, f in mod.functions.items()
            if hasattr(f, "params") and gv.name_hint != "main"}  # fmt: skip


def _kinds(net, shape) -> list[ConvKind | None]:
    return sorted((k for k in _kernels(net, shape).values()), key=lambda k: str(k))


@pytest.mark.parametrize(
    ("net", "kind"),
    [
        (torch.nn.Conv2d(8, 16, 1), ConvKind.POINTWISE),
        (torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1), torch.nn.ReLU6()), ConvKind.POINTWISE),
        (torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), ConvKind.DEPTHWISE),
        (torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), ConvKind.DEPTHWISE),
        (torch.nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False), ConvKind.DEPTHWISE),
        (torch.nn.Conv2d(8, 16, 3, padding=1), ConvKind.GENERAL),
        (torch.nn.Conv2d(8, 16, 1, stride=2), ConvKind.GENERAL),
        (torch.nn.Conv2d(8, 16, 1, padding=1), ConvKind.GENERAL),
    ],
)  # fmt: skip
def test_conv_kind_matches(net, kind):
    assert kind in _kinds(net, (1, 8, 14, 14))


@pytest.mark.parametrize(
    "net",
    [
        torch.nn.Conv2d(8, 16, 3, padding=1, groups=4),  # grouped, not depthwise
        torch.nn.Conv2d(8, 16, 3, padding=1, groups=8),  # depthwise with a multiplier
        torch.nn.Softmax(dim=1),  # two reductions: no default schedule
    ],
)  # fmt: skip
def test_conv_kind_leaves_other_kernels_alone(net):
    assert all(k is None for k in _kinds(net, (1, 8, 14, 14)))


class _Block(torch.nn.Module):
    """MobileNetV2-like: expand, depthwise (stride s), project, residual when shapes allow."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int):
        super().__init__()
        torch.manual_seed(0)
        self.expand = torch.nn.Conv2d(cin, mid, 1)
        self.dw = torch.nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid)
        self.project = torch.nn.Conv2d(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = torch.clamp(self.expand(x), 0, 6)
        y = torch.clamp(self.dw(y), 0, 6)
        y = self.project(y)
        return x + y if self.residual else y


@pytest.mark.parametrize(
    ("cin", "mid", "cout", "size", "stride"),
    [
        (16, 48, 16, 16, 1),  # pixels a multiple of 16: vectorised over pixels
        (16, 48, 16, 14, 1),  # 196 pixels: vectorised over output channels
        (24, 40, 24, 7, 1),  # 49 pixels, 40 and 24 channels: 8-lane vectors
        (8, 24, 12, 15, 2),  # odd size, stride 2
        (3, 6, 5, 9, 1),  # channel counts with no vector-friendly divisor
        (5, 11, 13, 11, 1),  # prime channel counts and sizes: tiles of one row
        (4, 8, 4, 1, 1),  # a 1x1 map
        (16, 88, 24, 17, 1),  # 289 pixels, 88 channels: pixels padded to whole tiles
        (16, 48, 16, 33, 1),  # 1089 pixels: padding adds under 5%, so pixels vectorised
        (8, 32, 8, 33, 2),  # stride 2 with an odd padded width (35): a zero column
        (16, 48, 16, 32, 1),  # project over pixels: each pixel tile copies its input
        (80, 96, 80, 7, 1),  # project over 5 channel tiles: each pixel tile copies
        (16, 48, 16, 28, 1),  # 49 whole vectors: padded to 52, tiles of 4 vectors
    ],
)  # fmt: skip
def test_default_scheduled_network_equals_pytorch(cin, mid, cout, size, stride, target=None):
    net = _Block(cin, mid, cout, stride).eval()
    x = torch.randn(1, cin, size, size)
    kinds = _kernels(net, tuple(x.shape)).values()
    assert sum(k is ConvKind.POINTWISE for k in kinds) == 2
    assert sum(k is ConvKind.DEPTHWISE for k in kinds) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedWarning)  # every kernel is scheduled
        model = tvm_freq.build(net, example_inputs=x, tuning=Tuning(use_shipped=False),
                               target=target)  # fmt: skip
    assert len(model.report.default_scheduled) == 3
    assert not model.report.untuned_tasks
    with torch.no_grad():
        ref = net(x).numpy()
    out = model(x)
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize(
    ("cin", "mid", "cout", "size"),
    [(24, 40, 24, 7), (80, 96, 80, 7), (32, 160, 40, 7), (16, 48, 16, 14), (16, 48, 16, 16),
     (16, 88, 16, 17), (8, 24, 8, 33), (8, 16, 8, 65), (8, 16, 8, 28)],
)  # fmt: skip
def test_avx2_schedules_equal_pytorch(cin, mid, cout, size):
    """AVX2's knobs on any x86-64 host with AVX2 (the host's own are tested above): 7x7
    maps get 7 rows of one vector, 17x17 ones padded pixels, depthwise rows of 33 and 28
    one multi-register vector, of 65 vectors of 13."""
    test_default_scheduled_network_equals_pytorch(cin, mid, cout, size, 1, "llvm -mcpu=core-avx2")


@pytest.mark.parametrize(("mid", "size", "stride"),
                         [(32, 14, 1), (88, 17, 1), (88, 35, 2), (48, 32, 1)])  # fmt: skip
def test_default_schedule_with_threads_is_exact(mid, size, stride):
    # 14x14: channel vectors; 17x17: padded pixels and a predicated last row step;
    # 35 -> 18 with stride 2: padded pixels (1225 -> 1248, 324 -> 336) and column
    # phases of an odd padded width (37); 32x32: pixel tiles that copy their own input.
    net = _Block(16, mid, 16, stride).eval()
    x = torch.randn(1, 16, size, size)
    model = tvm_freq.build(net, example_inputs=x, tuning=Tuning(use_shipped=False), threads=2)
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(model(x) - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize(
    ("net", "shape"),
    [
        (torch.nn.Conv2d(384, 64, 1), (1, 384, 14, 14)),  # one 64-channel tile
        (torch.nn.Conv2d(3, 32, 3, stride=2, padding=1), (1, 3, 32, 32)),  # the stem
    ],
)
def test_narrow_convs_give_every_thread_work(net, shape):
    """With several cores, the parallel loop spans channel tiles *and* pixel tiles / rows:
    a conv with a single channel tile used to run on one thread."""
    import re

    import tvm
    from tvm_freq.schedules.conv2d import default_schedule

    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
    mod = lower(import_model(net.eval(), input_shape=shape).mod, target)
    (func,) = [f for gv, f in mod.functions.items()
               if gv.name_hint != "main" and conv_kind(f) is not None]  # fmt: skip
    text = default_schedule(func, target).script()
    extents = [int(e) for e in re.findall(r"T\.parallel\((?:T\.int64\()?(\d+)", text)]
    assert extents and max(extents) >= 7, extents


def _pointwise(cin: int, cout: int, size: int, cores: int, mcpu: str = "skylake-avx512"):
    """The scheduled pointwise kernel (a schedule of it) and its input buffer's name."""
    import tvm
    from tvm import s_tir
    from tvm_freq.schedules.conv2d import default_schedule

    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": cores})
    net = torch.nn.Conv2d(cin, cout, 1).eval()
    mod = lower(import_model(net, input_shape=(1, cin, size, size)).mod, target)
    (func,) = [f for gv, f in mod.functions.items()
               if gv.name_hint != "main" and conv_kind(f) is ConvKind.POINTWISE]  # fmt: skip
    return s_tir.Schedule(default_schedule(func, target)), func.params[0].name


def _pointwise_loops(cin: int, cout: int, size: int, cores: int):
    """The scheduled pointwise kernel's activations copy and GEMM loops, outermost first."""
    sch, name = _pointwise(cin, cout, size, cores)
    copy = [sch.get(lp) for lp in sch.get_loops(sch.get_sblock(f"{name}_global"))]
    gemm = [sch.get(lp) for lp in sch.get_loops(sch.get_sblock("conv2d_nchw_update"))]
    return copy, gemm


@pytest.mark.parametrize(
    ("cin", "cout", "size", "cores"),
    [(144, 24, 56, 1), (144, 24, 56, 2), (32, 16, 112, 2)],
)  # fmt: skip
def test_narrowing_pointwise_copies_activations_per_pixel_tile(cin, cout, size, cores):
    """Over pixels, a narrowing conv's pixel tiles copy their own activations inside the
    tile loop, the one threads share: a whole-input copy ahead of the GEMM ran on one
    thread and left half the input in the other core's cache (project layers ran slower
    on two threads than on one)."""
    from tvm.tirx import ForKind

    copy, gemm = _pointwise_loops(cin, cout, size, cores)
    assert copy[1].same_as(gemm[1])  # [0] is the batch
    assert (gemm[1].kind == ForKind.PARALLEL) == (cores > 1)


@pytest.mark.parametrize(
    ("cin", "cout", "size", "cores"),
    [
        (24, 144, 56, 1),  # widening, one thread: one copy of the whole (small) input first
        (32, 16, 4, 2),  # a 4x4 map: too few pixel tiles
        (64, 32, 22, 1),  # channel vectors over 4-pixel tiles that straddle 22-wide rows
    ],
)  # fmt: skip
def test_other_pointwise_convs_copy_activations_once(cin, cout, size, cores):
    copy, gemm = _pointwise_loops(cin, cout, size, cores)
    assert not copy[1].same_as(gemm[1])


@pytest.mark.parametrize(
    ("cin", "cout", "size", "cores"),
    [
        (960, 160, 7, 1),  # 7-pixel tiles, each one image row
        (384, 64, 14, 2),  # two tiles per row
        (64, 384, 14, 1),  # widening
        (208, 96, 9, 1),  # 3-pixel tiles
    ],
)  # fmt: skip
def test_channel_vector_tiles_within_rows_read_the_input_in_place(cin, cout, size, cores):
    """Tiles of output-channel vectors over pixel rows that divide the map's width lie in
    one image row each: the GEMM reads the input buffer itself, with no copy."""
    sch, name = _pointwise(cin, cout, size, cores)
    with pytest.raises(Exception, match="get-block|not find|No block"):  # noqa: PT011
        sch.get_sblock(f"{name}_global")
    reads = [r.source.name for r in sch.get(sch.get_sblock("conv2d_nchw_update")).reads]
    assert name in reads


def _register_tile(sch) -> tuple[int, ...]:
    """Extents of the GEMM's unrolled and vectorised loops: (rows, vectors, lanes)."""
    from tvm.tirx import ForKind

    loops = [sch.get(lp) for lp in sch.get_loops(sch.get_sblock("conv2d_nchw_update"))]
    return tuple(int(lp.extent) for lp in loops
                 if lp.kind in (ForKind.UNROLLED, ForKind.VECTORIZED))  # fmt: skip


@pytest.mark.parametrize(
    ("cin", "cout", "size", "mcpu", "tile"),
    [
        # 49 pixels: no divisor within AVX2's 6 rows but 1; 7 rows of one vector instead
        # of one row of two (2.6-3.0x slower, docs/results/avx2/layers-*.md).
        (96, 160, 7, "core-avx2", (7, 1, 8)),
        (160, 960, 7, "core-avx2", (7, 1, 8)),
        # must not change: 4 rows divide 196; AVX-512's 7 rows divide 49.
        (64, 384, 14, "core-avx2", (4, 2, 8)),
        (96, 160, 7, "skylake-avx512", (7, 2, 16)),
        # 7 rows of 4 AVX-512 vectors need 33 registers: 2 (64 channels) or 3 (960) vectors
        (384, 64, 14, "skylake-avx512", (7, 2, 16)),
        (160, 960, 7, "skylake-avx512", (7, 3, 16)),
        (96, 576, 14, "skylake-avx512", (7, 3, 16)),
        (64, 384, 14, "skylake-avx512", (7, 3, 16)),
    ],
)  # fmt: skip
def test_channel_vector_tiles_take_rows_that_divide_the_pixels(cin, cout, size, mcpu, tile):
    sch, _ = _pointwise(cin, cout, size, 1, mcpu)
    assert _register_tile(sch) == tile


@pytest.mark.parametrize(
    ("width", "knobs", "lanes"),
    [
        (33, _AVX2, 33), (28, _AVX2, 28), (65, _AVX2, 13), (130, _AVX2, 13), (56, _AVX2, 8),
        (14, _AVX2, 14), (9, _AVX2, 9),
        # AVX-512 as before: the bounds are in floats, three of its registers and one
        (33, ConvKnobs(), 33), (65, ConvKnobs(), 13), (112, ConvKnobs(), 16),
        (7, ConvKnobs(), 7),
    ],
)  # fmt: skip
def test_depthwise_vectors_follow_the_row_not_the_machine_vector(width, knobs, lanes):
    """Capped at AVX2's 8 lanes, 33-wide rows got 3-lane vectors (7.5x slower)."""
    from tvm_freq.schedules.depthwise import _depthwise_lanes

    assert _depthwise_lanes(width, knobs) == lanes


def test_knobs_follow_the_target():
    import tvm

    assert knobs_for(tvm.target.Target({"kind": "llvm", "mcpu": "core-avx2"})) == _AVX2

    avx512 = knobs_for(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512",
                                          "num-cores": 2}))  # fmt: skip
    assert avx512.lanes == 16 and avx512.parallel
    one = knobs_for(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512",
                                       "num-cores": 1}))  # fmt: skip
    assert not one.parallel
    with pytest.raises(ValueError, match="power of two"):
        ConvKnobs(lanes=12)


@pytest.mark.parametrize(
    "conv",
    [
        torch.nn.Conv2d(3, 32, 3, stride=2, padding=1),  # MobileNetV2's stem
        torch.nn.Conv2d(8, 16, 1, stride=2),
        torch.nn.Conv2d(8, 12, 5, padding=2, bias=False),
        torch.nn.Conv2d(5, 6, (3, 1), padding=(1, 0)),
    ],
)  # fmt: skip
def test_general_conv_default_schedule_equals_pytorch(conv):
    torch.manual_seed(0)
    net = torch.nn.Sequential(conv, torch.nn.ReLU6()).eval()
    x = torch.randn(1, conv.in_channels, 17, 17)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedWarning)
        model = tvm_freq.build(net, example_inputs=x, tuning=Tuning(use_shipped=False))
    assert model.report.default_scheduled and not model.report.untuned_tasks
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(model(x) - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize(
    ("batch", "features", "classes"), [(1, 1280, 1000), (3, 40, 10), (2, 7, 5)]
)
def test_classifier_matmul_default_schedule_equals_pytorch(batch, features, classes):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(features, classes)).eval()
    x = torch.randn(batch, features, 1, 1)
    assert ConvKind.MATMUL in _kinds(net, tuple(x.shape))
    model = tvm_freq.build(net, example_inputs=x, tuning=Tuning(use_shipped=False))
    assert any("matmul" in t for t in model.report.default_scheduled)
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(model(x) - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize(
    "net",
    [
        torch.nn.Conv2d(24, 8, 1, bias=False),  # pointwise: over pixels at 8x8, channels at 7x7
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10, bias=False)),
    ],
)  # fmt: skip
@pytest.mark.parametrize("size", [8, 7])
def test_kernel_writing_the_model_output_directly(net, size):
    # No epilogue: the conv (or matmul) writes the function's output buffer itself.
    torch.manual_seed(0)
    cin = 8 if isinstance(net, torch.nn.Sequential) else net.in_channels
    if isinstance(net, torch.nn.Sequential) and size != 8:
        pytest.skip("the linear layer is sized for 8x8")
    x = torch.randn(2, cin, size, size)
    model = tvm_freq.build(net.eval(), example_inputs=x, tuning=Tuning(use_shipped=False))
    assert model.report.default_scheduled
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(model(x) - ref).max() / np.abs(ref).max() < 1e-5


class _ConvThenSamePad(torch.nn.Module):
    """A 1x1 conv whose fused epilogue pads for the next "same" conv (EfficientNet ports)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pw = torch.nn.Conv2d(8, 16, 1)
        self.dw = torch.nn.Conv2d(16, 16, 3, stride=2, groups=16)

    def forward(self, x):
        y = torch.clamp(self.pw(x), 0, 6)
        return self.dw(torch.nn.functional.pad(y, [0, 1, 0, 1]))


def test_epilogue_that_changes_the_shape_is_left_alone():
    net = _ConvThenSamePad().eval()
    x = torch.randn(1, 8, 10, 10)
    kernels = _kernels(net, tuple(x.shape))
    padded = [name for name in kernels if "conv" in name and "pad" in name]
    assert padded, kernels  # the pad really is fused into the conv's kernel
    assert all(kernels[name] is None for name in padded)
    model = tvm_freq.build(net, example_inputs=x, tuning=Tuning(use_shipped=False))
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(model(x) - ref).max() / np.abs(ref).max() < 1e-5


class _Elementwise(torch.nn.Module):
    def forward(self, x):
        y = torch.clamp(x * 0.5 + 1.0, -1.0, 3.0) * x  # one fused elementwise kernel
        return y.transpose(2, 3).reshape(1, -1)  # a layout change: data-parallel too


@pytest.mark.parametrize("shape", [(1, 4, 6, 6), (1, 3, 5, 7)])
def test_elementwise_default_schedule_equals_pytorch(shape):
    x = torch.randn(*shape)
    kinds = _kinds(_Elementwise(), shape)
    assert ConvKind.ELEMENTWISE in kinds
    model = tvm_freq.build(_Elementwise(), example_inputs=x, tuning=Tuning(use_shipped=False))
    assert model.report.default_scheduled
    np.testing.assert_allclose(model(x), _Elementwise()(x).numpy(), rtol=1e-6, atol=1e-6)


def test_reductions_are_not_elementwise():
    kinds = _kinds(torch.nn.AdaptiveAvgPool2d(1), (1, 4, 6, 6))
    assert kinds == [ConvKind.REDUCTION]  # tvm_freq.schedules.generic's, not elementwise


@pytest.mark.parametrize(
    ("pixels", "channels", "padded", "knobs"),
    [
        (256, 88, False, ConvKnobs()),  # whole vectors of pixels
        (196, 384, False, ConvKnobs()),  # 14x14: 7 rows of pixels x 4 vectors of channels
        (49, 160, False, ConvKnobs()),  # 7x7: 7 rows x 2 vectors
        (81, 1248, False, ConvKnobs()),  # 9x9: 3 rows x 3 vectors
        (289, 88, True, ConvKnobs()),  # 17x17 with 88 channels: no vector of channels fits
        (289, 720, True, ConvKnobs()),  # 17 is prime: one row of pixels
        (81, 208, True, ConvKnobs()),  # 3 rows x 1 vector: too few accumulators
        (16900, 16, True, ConvKnobs()),  # 130x130: padding adds 0.2%
        (1089, 144, True, ConvKnobs()),  # 33x33: padding adds 1.4%
        (784, 32, True, ConvKnobs()),  # 28x28: 49 vectors, none but 1 divides; adds 6.1%
        (3136, 24, False, ConvKnobs()),  # 56x56: 196 vectors, 4 per row divide them
        (144, 192, False, ConvKnobs()),  # 12x12: 9 vectors, whole tiles would add 33%
        (784, 32, False, _AVX2),  # 98 vectors of 8: 2 per row divide them
        # AVX2: one row of two 8-lane vectors is a fifth of its budget, but one pixel row
        # (17x17 expand layers ran 2.3x faster padded)
        (289, 528, True, _AVX2),
        (289, 720, True, _AVX2),
        (49, 160, False, _AVX2),  # 7 rows x 1 vector
        (81, 1248, False, _AVX2),  # 3 rows x 2 vectors
    ],
)  # fmt: skip
def test_pointwise_pads_pixels_only_where_no_exact_tile_fits(pixels, channels, padded, knobs):
    from tvm_freq.schedules.conv2d import _padded_pixel_step

    step = _padded_pixel_step(pixels, channels, knobs)
    assert (step > 0) is padded
    if padded:
        assert step % knobs.lanes == 0 and step >= 2 * knobs.lanes
        assert (-(-pixels // step) * step - pixels) < step


def test_widening_convs_keep_whole_vectors_unpadded():
    """Whole-vector padding: 28x28 project layers on one thread, not expand layers (no gain)
    nor threads (an unstable gain or loss, docs/results/zen5/layers-28x28-*.md)."""
    from tvm_freq.schedules.conv2d import _padded_pixel_step

    assert _padded_pixel_step(784, 32, ConvKnobs(), widening=False) == 64
    assert _padded_pixel_step(784, 192, ConvKnobs(), widening=True) == 0
    assert _padded_pixel_step(784, 32, ConvKnobs(parallel=True), widening=False) == 0
    # Unchanged for widening convs where padding was already the rule (17x17 maps).
    assert _padded_pixel_step(289, 720, ConvKnobs(), widening=True) > 0


def test_padded_pointwise_computes_whole_vector_tiles():
    """The 17x17 layer's GEMM runs on 320 pixels (zeros past 289), fully vectorised; the
    output keeps its 289 pixels."""
    import re

    import tvm
    from tvm_freq.schedules.conv2d import default_schedule

    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1})
    net = torch.nn.Sequential(torch.nn.Conv2d(64, 88, 1), torch.nn.ReLU6())
    mod = lower(import_model(net.eval(), input_shape=(1, 64, 17, 17)).mod, target)
    (func,) = [f for gv, f in mod.functions.items()
               if gv.name_hint != "main" and conv_kind(f) is ConvKind.POINTWISE]  # fmt: skip
    text = default_schedule(func, target).script()
    padded = r"sblock_alloc_buffer\(\(T\.int64\(1\), T\.int64\(64\), T\.int64\(320\)\)"
    assert re.search(padded, text)
    assert "T.vectorized(T.int64(16))" in text
    update = text.split('sblock("conv2d_nchw_update")')[1].split("sblock")[0]
    assert "T.where(" not in update  # no predicate: whole tiles


@pytest.mark.parametrize(("size", "stride", "taps", "padding"),
                         [(17, 1, 5, 2), (17, 2, 5, 2), (14, 2, 3, 1), (13, 2, 3, 1), (9, 2, 5, 2),
                          (16, 1, 3, 0), (16, 2, 3, 0), (12, 1, 3, 2), (15, 2, 5, 1),
                          # stride 2 with phases of at least MIN_PARTITIONED_PHASE (15, 14):
                          # the copy partitioned at the border, for odd and even widths
                          (27, 2, 3, 1), (24, 2, 5, 2)])  # fmt: skip
def test_depthwise_default_schedule_equals_pytorch(size, stride, taps, padding):
    """Depthwise kxk convs, stride 1 and 2, even and odd padded widths (stride 2 reads
    column phases of the padded plane), no padding, and padding other than "same" (the
    plane's border and interior are copied apart)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 24, taps, stride=stride, padding=padding, groups=24)
    net = torch.nn.Sequential(conv, torch.nn.ReLU6()).eval()
    x = torch.randn(1, 24, size, size)
    assert ConvKind.DEPTHWISE in _kinds(net, tuple(x.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedWarning)
        model = tvm_freq.build(net, example_inputs=x, tuning=Tuning(use_shipped=False))
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(model(x) - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize(("height", "stride", "rows"),
                         [(56, 1, 4), (14, 1, 7), (7, 2, 7), (65, 1, 5), (17, 1, 4), (9, 1, 4),
                          (33, 2, 3), (17, 2, 1), (1, 1, 1), (2, 1, 2)])  # fmt: skip
def test_depthwise_rows_per_step(height, stride, rows):
    from tvm_freq.schedules.depthwise import _depthwise_rows

    assert _depthwise_rows(height, stride) == rows


def test_register_tiles_start_with_the_default_and_fit_the_registers():
    from tvm_freq.schedules.conv2d import register_tiles

    for knobs in (ConvKnobs(), ConvKnobs(lanes=8, rows=4, col_vectors=2)):
        tiles = register_tiles(knobs)
        assert tiles[0] == (knobs.rows, knobs.col_vectors)
        assert len(set(tiles)) == len(tiles) > 4
        assert all(r * v <= knobs.rows * knobs.col_vectors for r, v in tiles)


@pytest.mark.parametrize(
    ("net", "shape", "kind"),
    [
        (torch.nn.Sequential(torch.nn.Conv2d(24, 40, 1), torch.nn.ReLU6()), (1, 24, 16, 16),
         ConvKind.POINTWISE),
        (torch.nn.Sequential(torch.nn.Conv2d(24, 24, 3, 2, 1, groups=24), torch.nn.ReLU6()),
         (1, 24, 17, 17), ConvKind.DEPTHWISE),
        (torch.nn.Sequential(torch.nn.Conv2d(24, 24, 5, 1, 2, groups=24), torch.nn.ReLU6()),
         (1, 24, 17, 17), ConvKind.DEPTHWISE),
        (torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), (1, 3, 18, 18), ConvKind.GENERAL),
    ],
)  # fmt: skip
def test_dense_design_space_samples_exact_schedules(net, shape, kind, tensor_intrinsics):
    """Every sampled point of the dense design space computes what the unscheduled kernel
    does, and the samples differ (the tile is a decision of the trace)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm_freq.schedules.conv2d import design_space

    def run(f, arrays):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}),
                          target=runnable(target))  # fmt: skip
        args = [tvm.runtime.tensor(a) for a in arrays]
        lib["main"](*args)
        return args[-1].numpy()

    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1})
    mod = lower(import_model(net.eval(), input_shape=shape).mod, target)
    (func,) = [f for gv, f in mod.functions.items()
               if gv.name_hint != "main" and conv_kind(f) is kind]  # fmt: skip
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal([int(d) for d in p.shape]).astype("float32")
              for p in func.params]  # fmt: skip
    ref = run(func, arrays)
    scripts = set()
    for seed in range(4):
        ctx = ms.TuneContext(mod=tvm.IRModule({"main": func}), target=target,
                             space_generator=design_space(target), rand_state=seed)  # fmt: skip
        (sch,) = ctx.generate_design_space()
        assert any(i.kind.name == "SampleCategorical" for i in sch.trace.insts)
        # MetaSchedule prints and stores traces: every primitive used must support it
        # (decompose_padding's printer is broken in this TVM, and tuning crashed).
        assert "sample_categorical" in str(sch.trace)
        scripts.add(sch.mod["main"].script())
        np.testing.assert_allclose(run(sch.mod["main"], arrays), ref, rtol=1e-4, atol=1e-4)
    assert len(scripts) > 1
