"""The beyond-paper ``activation="spatial_relu"`` block: exactness, gradients, storage, lowering."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_specnet import _block as _any_block
from torch import nn

import tvm_freq
from tvm_freq.pipeline import UntunedWarning
from tvm_freq.specnet import (
    ConvAct,
    SpecMap,
    SpectralConv2d,
    ToSpatial,
    calibrate_,
    get_specnet,
    redundant_mask,
    spectral_conv2d_reference,
    spectral_layers,
    unpack_mask,
)
from tvm_freq.specnet.memory import SavedTensorCounter
from tvm_freq.specnet.relax_import import lower_specnet
from tvm_freq.tuning import Tuning

D = torch.float64
RELU = "spatial_relu"


# The block maker of the paper's tests (same folder), with the variant by default.
_block = functools.partial(_any_block, activation=RELU)


@pytest.mark.parametrize(
    ("k", "padding", "stride"), [(3, 1, 1), (3, 2, 1), (5, 0, 1), (3, 1, 2), (1, 0, 1)]
)
def test_equals_conv_relu_at_beta_zero(k, padding, stride):
    # Padded, valid, strided and 1x1 (the one geometry where the round trip is added).
    x = torch.randn(2, 3, 9, 9, dtype=D)
    m = _block(3, 4, k, padding, stride)
    out = m(x)
    ref = F.relu(F.conv2d(x, m.weight, m.bias, stride, padding))
    torch.testing.assert_close(out.to_spatial(), ref, atol=1e-12, rtol=0)


def test_names_and_aliases():
    assert SpectralConv2d(2, 2, 3).activation == "spectral_tanh"  # the paper's, default
    assert SpectralConv2d(2, 2, 3, activation="tanh").activation == "spectral_tanh"
    assert SpectralConv2d(2, 2, 3, activation=RELU).activation == RELU
    assert "activation=spatial_relu" in repr(SpectralConv2d(2, 2, 3, activation=RELU))
    with pytest.raises(ValueError, match="activation"):
        SpectralConv2d(2, 2, 3, activation="relu")
    with pytest.raises(ValueError, match="activation"):
        ConvAct(2, 2, 3, spectral=False, activation="gelu")


def _chain_grads(beta: float, stride: int):
    # A paper block feeds a spatial_relu block; compare with autograd of the dense
    # reference on the same (densified) input.
    torch.manual_seed(1)
    x = torch.randn(3, 2, 8, 8, dtype=D)
    a = _block(2, 3, 3, beta=beta, activation="spectral_tanh")
    b = _block(3, 2, 3, 1, stride, beta=beta, seed=2)
    a.workspace_bytes = b.workspace_bytes = 1  # one batch item per chunk
    z = a(x)
    vals = z.values.detach().clone().requires_grad_(True)
    out = b(SpecMap(z.batch, z.channels, z.grid, z.support, values=vals, bits=z.bits))
    y = out.to_spatial()
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [vals, b.weight, b.bias], g)
    dense = z.to_dense().detach().clone().requires_grad_(True)
    ref = spectral_conv2d_reference(
        dense, b.weight, b.bias, padding=1, stride=stride, beta=beta, activation=RELU,
        in_grid=z.grid, in_support=z.support,
    )  # fmt: skip
    yref = torch.fft.irfft2(ref, s=(out.grid,) * 2, norm="ortho")
    torch.testing.assert_close(y, yref, atol=1e-12, rtol=0)
    want = torch.autograd.grad(yref, [dense, b.weight, b.bias], g)
    # A stored value also stands for its redundant conjugate partner.
    perm = (-torch.arange(z.grid)) % z.grid
    partner = want[0].index_select(-2, perm).conj()
    want_vals = want[0] + torch.where(redundant_mask(z.grid).index_select(0, perm), partner, 0)
    torch.testing.assert_close(got[0], want_vals[unpack_mask(z.bits, z.shape)], atol=1e-12, rtol=0)
    torch.testing.assert_close(got[1], want[1], atol=1e-11, rtol=0)
    torch.testing.assert_close(got[2], want[2], atol=1e-11, rtol=0)
    return out.density


@pytest.mark.parametrize("stride", [1, 2])
def test_gradients_match_autograd_at_beta_zero(stride):
    assert _chain_grads(0.0, stride) == 1.0


def test_gradients_are_exact_for_the_thresholded_forward():
    assert _chain_grads(0.3, 1) < 0.95


def test_gradcheck_float64():
    m = _block(2, 2, 3)
    x = torch.randn(1, 2, 5, 5, dtype=D, requires_grad=True)

    def f(inp, w, b):
        return torch.func.functional_call(m, {"weight": w, "bias": b}, (inp,)).to_spatial()

    assert torch.autograd.gradcheck(f, (x, m.weight, m.bias))


def test_saved_bytes_are_the_kept_entries_plus_bitmask_like_the_paper_block():
    # What the block saves is its compact input and output and the parameters; the ReLU
    # mask is recomputed in backward, so nothing else is saved, for either activation.
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    first = SpectralConv2d(3, 8, 3, beta=0.0)(x)
    zin = SpecMap(4, 8, 16, 16, values=first.values.detach().requires_grad_(True),
                  bits=first.bits)  # fmt: skip
    for act in ("spectral_tanh", RELU):
        b = SpectralConv2d(8, 8, 3, beta=0.5, activation=act)
        with SavedTensorCounter(b) as counter:
            out = b(zin)
        stats = counter.stats()
        kept, dense = out.values.numel(), 4 * 8 * 16 * 9
        assert 0 < kept < dense
        expected = (zin.values.numel() + kept) * 8 + zin.bits.numel() + out.bits.numel()
        assert stats.activation_bytes == expected, act
        assert stats.by_dtype == {"complex64": (zin.values.numel() + kept) * 8,
                                  "uint8": zin.bits.numel() + out.bits.numel()}  # fmt: skip
        assert stats.parameter_bytes == (b.weight.numel() + b.bias.numel()) * 4
        assert out.nbytes == kept * 8 + out.bits.numel()
        assert not (unpack_mask(out.bits, out.shape) & redundant_mask(16)).any()
        out.to_spatial().sum().backward()  # backward runs from what was saved


@pytest.mark.parametrize("name", ["vgg16", "densenet"])
def test_model_at_beta_zero_is_its_relu_twin(name):
    kw = {"depth": 10, "head_size": 8} if name == "densenet" else {}
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    spec = get_specnet(name, beta=0.0, width=0.125, in_channels=1, activation=RELU, **kw)
    twin = get_specnet(name, spectral=False, width=0.125, in_channels=1, **kw)
    # The variant's calibration measures the pre-activation map in space, as the twin's.
    assert calibrate_(spec, x) == pytest.approx(calibrate_(twin, x), rel=1e-4)
    # Non-zero biases: with zero ones, a 1x1 conv of an all-zero ReLU pixel sits exactly
    # on the kink, where the FFT round trip's rounding picks a side at random.
    torch.manual_seed(1)
    with torch.no_grad():
        for p, q in zip(spec.parameters(), twin.parameters(), strict=True):
            if p.dim() == 1:
                p.copy_(q.normal_(0, 0.1))
    outs = []
    for model in (spec, twin):
        out = model(x)
        F.cross_entropy(out, y).backward()
        outs.append((out, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-4)
    for gs, gt in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(gs, gt, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("name", ["lenet", "vgg16", "densenet"])
def test_lowered_module_matches_the_training_path(name):
    kw = {"depth": 10} if name == "densenet" else {}
    torch.manual_seed(0)
    model = get_specnet(name, beta=0.3, width=0.25, in_channels=1, activation=RELU, **kw)
    calibrate_(model, torch.randn(16, 1, 32, 32))
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = lower_specnet(model, x)(x)
    assert max(m.last_density for _, m in spectral_layers(model)) < 0.95  # beta is active
    torch.testing.assert_close(out, ref, atol=1e-5 * float(ref.abs().max()), rtol=0)


def test_compiled_inference_matches_pytorch(tmp_path):
    # A strided 3x3 block (ReLU in the crop's round trip) and a 1x1 one (its own round
    # trip); the lowering of pools and DenseNet lists is checked in PyTorch above.
    torch.manual_seed(0)
    model = nn.Sequential(
        SpectralConv2d(1, 4, 3, stride=2, beta=0.3, activation=RELU),
        SpectralConv2d(4, 6, 1, beta=0.3, activation=RELU),
        ToSpatial(), nn.Flatten(), nn.Linear(6 * 64, 5),
    )  # fmt: skip
    with torch.no_grad():
        for m in model:
            if isinstance(m, SpectralConv2d):
                m.weight.mul_(3.0)
                m.bias.normal_(0, 0.1)
    model.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        ref = model(x).numpy()
    assert all(0 < m.last_density < 0.95 for _, m in spectral_layers(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        # No tuning records to read (an empty store, nothing shipped): compiles faster.
        none = Tuning(records=tmp_path, use_shipped=False)
        compiled = tvm_freq.build(model, input_shape=tuple(x.shape), tuning=none)
    got = compiled(x)
    assert got.shape == ref.shape
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < 1e-4, rel
