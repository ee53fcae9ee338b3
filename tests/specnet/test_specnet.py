"""SpecNet: FFT conv exactness, symmetry, compact storage, gradients, models, errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tvm_freq.specnet import (
    SPECNET_NAMES,
    AvgPool,
    SpecMap,
    SpectralConv2d,
    SpectralTanh,
    calibrate_,
    get_specnet,
    hermitian_fill,
    kernel_spectrum,
    pack_mask,
    redundant_mask,
    set_beta,
    set_workspace,
    spectral_avg_pool2d,
    spectral_conv2d_reference,
    spectral_decimate,
    spectral_layers,
    spectral_tanh,
    spectral_threshold,
    unique_entries,
    unpack_mask,
)
from tvm_freq.specnet.memory import SavedTensorCounter

D = torch.float64



def _block(cin, cout, k, padding=None, stride=1, beta=0.0, activation=None, seed=0):
    torch.manual_seed(seed)
    m = SpectralConv2d(cin, cout, k, padding, stride, beta, activation).double()
    with torch.no_grad():
        m.bias.normal_()
    return m


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("k", "padding", "stride"),
    [(3, 2, 1), (5, 4, 1), (3, 1, 1), (5, 0, 1), (4, 1, 1), (3, 1, 2), (4, 3, 2), (1, 0, 1)],
)
def test_fft_conv_equals_spatial_conv_at_beta_zero(k, padding, stride):
    # padding = k - 1 is the full linear convolution (the whole M + k - 1 grid); smaller
    # paddings are the same convolution cropped the way nn.Conv2d crops it.
    x = torch.randn(2, 3, 9, 9, dtype=D)
    m = _block(3, 4, k, padding, stride)
    out = m(x)
    ref = F.conv2d(x, m.weight, m.bias, stride, padding)
    assert out.to_spatial().shape == ref.shape
    torch.testing.assert_close(out.to_spatial(), ref, atol=1e-11, rtol=0)
    assert out.density == 1.0  # nothing dropped at beta = 0


def test_kernel_spectrum_is_fft_of_padded_flipped_kernel():
    w = torch.randn(2, 3, 3, 3, dtype=D)
    g, p = 10, 1
    h = torch.roll(F.pad(w.flip(-2, -1), (0, g - 3, 0, g - 3)), (-(3 - 1 - p),) * 2, (-2, -1))
    torch.testing.assert_close(kernel_spectrum(w, g, p), torch.fft.rfft2(h))


def test_spectral_input_skips_fft_and_still_equals_spatial_conv():
    x = torch.randn(2, 3, 8, 8, dtype=D)
    a = _block(3, 4, 3, activation="tanh")
    b = _block(4, 5, 3, seed=1)
    z = a(x)
    assert isinstance(z, SpecMap) and z.grid == 8 and z.support == 8  # halo dropped
    torch.testing.assert_close(
        b(z).to_spatial(), F.conv2d(z.to_spatial(), b.weight, b.bias, 1, 1), atol=1e-12, rtol=0
    )


def test_pooling_and_concatenation_in_the_spectral_domain():
    x = torch.randn(2, 2, 12, 12, dtype=D)
    a = _block(2, 3, 3, activation="tanh")
    p = _block(2, 2, 1, activation="tanh", seed=2)  # pointwise: keeps the halo
    za, zp = a(x), p(x)
    pooled = AvgPool(2)([za, zp])
    c = _block(5, 4, 3, seed=3)
    ref_in = torch.cat([F.avg_pool2d(za.to_spatial(), 2), F.avg_pool2d(zp.to_spatial(), 2)], 1)
    torch.testing.assert_close(
        c(pooled).to_spatial(), F.conv2d(ref_in, c.weight, c.bias, 1, 1), atol=1e-12, rtol=0
    )
    one = _block(3, 2, 1, seed=4)  # a 1x1 conv on a map with a halo
    torch.testing.assert_close(
        one(za).to_spatial(), F.conv2d(za.to_spatial(), one.weight, one.bias), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize("factor", [2, 3])
def test_decimation_and_avg_pool_in_frequency(factor):
    g = 12
    x = torch.randn(2, 3, g, g, dtype=D)
    spec = torch.fft.rfft2(x, norm="ortho")
    dec = spectral_decimate(spec, factor, g)
    torch.testing.assert_close(
        dec, torch.fft.rfft2(x[..., ::factor, ::factor], norm="ortho"), atol=1e-12, rtol=0
    )
    pooled = spectral_avg_pool2d(spec, factor, g)
    pooled = torch.fft.irfft2(pooled, s=(g // factor,) * 2, norm="ortho")
    torch.testing.assert_close(pooled, F.avg_pool2d(x, factor), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="divide"):
        spectral_decimate(spec, 5, g)


# --------------------------------------------------------------------------- symmetry


def _hermitian_error(full: torch.Tensor) -> float:
    # Z[p, q] vs conj(Z[-p, -q]) on a full (not half) 2-D spectrum.
    flipped = torch.roll(full.flip(-2, -1), (1, 1), (-2, -1))
    return float((full - flipped.conj()).abs().max().detach())


def test_spectral_tanh_preserves_conjugate_symmetry():
    x = torch.randn(3, 10, 10, dtype=D)
    full = torch.fft.fft2(x, norm="ortho") * 3  # big enough for tanh to be nonlinear
    assert _hermitian_error(full) < 1e-12
    z = spectral_tanh(spectral_threshold(full, 0.8))
    assert _hermitian_error(z) < 1e-12
    back = torch.fft.ifft2(z, norm="ortho")
    assert back.imag.abs().max() < 1e-12
    assert back.real.abs().max() > 0.1
    # An activation that is not odd in the imaginary part breaks the symmetry: the
    # inverse transform then has a real imaginary part ("pseudo phases").
    bad = torch.complex(torch.tanh(full.real), torch.sigmoid(full.imag))
    assert _hermitian_error(bad) > 0.1
    assert torch.fft.ifft2(bad, norm="ortho").imag.abs().max() > 0.1


def test_block_output_half_spectrum_matches_full_spectrum_computation():
    # The rfft2 half representation used by the block agrees with doing everything on the
    # full fft2 spectrum, whose inverse is real: linear conv on the 8x8 grid, halo cropped
    # (the output is stored on its own 6x6 support grid), bias, threshold, tanh.
    x = torch.randn(1, 2, 6, 6, dtype=D)
    m = _block(2, 3, 3, beta=0.3, activation="tanh")
    g, n = 8, 6
    X = torch.fft.fft2(x, s=(g, g), norm="ortho")
    h = torch.roll(F.pad(m.weight.flip(-2, -1), (0, g - 3, 0, g - 3)), (-1, -1), (-2, -1))
    Y = torch.einsum("bihw,oihw->bohw", X, torch.fft.fft2(h))
    y = torch.fft.ifft2(Y, norm="ortho")
    assert y.imag.abs().max() < 1e-12
    Y = torch.fft.fft2(y.real[..., :n, :n], norm="ortho")
    Y[..., 0, 0] += m.bias * n
    Z = spectral_tanh(spectral_threshold(Y, 0.3))
    assert _hermitian_error(Z) < 1e-12
    z = torch.fft.ifft2(Z, norm="ortho")
    assert z.imag.abs().max() < 1e-12
    out = m(x)
    torch.testing.assert_close(out.to_dense(), Z[..., : n // 2 + 1], atol=1e-12, rtol=0)
    torch.testing.assert_close(
        torch.fft.irfft2(out.to_dense(), s=(n, n), norm="ortho"), z.real, atol=1e-12, rtol=0
    )


def test_spectral_tanh_module_keeps_sparsity():
    m = _block(2, 3, 3, beta=0.5)
    z = m(torch.randn(2, 2, 8, 8, dtype=D))
    t = SpectralTanh()(z)
    assert torch.equal(t.bits, z.bits)
    torch.testing.assert_close(t.values, spectral_tanh(z.values))
    with pytest.raises(ValueError, match="complex"):
        SpectralTanh()(torch.randn(3))


# --------------------------------------------------------------------------- compact storage


def test_pack_unpack_roundtrip():
    mask = torch.rand(3, 5, 7) > 0.6
    bits = pack_mask(mask)
    assert bits.dtype == torch.uint8 and bits.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_mask(bits, mask.shape), mask)


def test_saved_bytes_are_the_kept_entries_plus_bitmask():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    a = SpectralConv2d(3, 8, 3, beta=0.0)
    b = SpectralConv2d(8, 8, 3, beta=1.0)
    z = a(x).values.detach(), a(x).bits
    zin = SpecMap(4, 8, 16, 16, values=z[0].requires_grad_(True), bits=z[1])
    with SavedTensorCounter(b) as counter:
        out = b(zin)
    stats = counter.stats()
    kept = out.values.numel()
    dense = 4 * 8 * 16 * 9  # the output's own 16x16 grid, half spectrum
    assert 0 < kept < dense
    expected = (zin.values.numel() + kept) * 8 + zin.bits.numel() + out.bits.numel()
    assert stats.activation_bytes == expected  # input + output, compact, nothing dense
    assert out.bits.numel() == -(-dense // 8)
    assert stats.parameter_bytes == (b.weight.numel() + b.bias.numel()) * 4
    assert out.nbytes == kept * 8 + out.bits.numel()
    assert out.nbytes < dense * 8 / 2  # beta = 1 keeps far less than the dense spectrum


@pytest.mark.parametrize("grid", [1, 2, 3, 4, 7, 8, 16])
def test_unique_entries_are_the_degrees_of_freedom_of_a_real_map(grid):
    x = torch.randn(2, 3, grid, grid, dtype=D)
    z = torch.fft.rfft2(x, norm="ortho")
    # hermitian_fill rebuilds an rfft2 from its unique entries alone.
    red = redundant_mask(grid)
    torch.testing.assert_close(hermitian_fill(z.masked_fill(red, 0), grid), z, atol=1e-12, rtol=0)
    # grid^2 real numbers: the unique complex entries minus the imaginary parts that are
    # zero (DC and the Nyquist entries, 4 for an even grid).
    real_only = 1 if grid % 2 else 4
    assert 2 * unique_entries(grid) - real_only == grid * grid
    assert unique_entries(grid) == grid * (grid // 2 + 1) - int(red.sum())


def test_compact_maps_store_no_redundant_entry():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 12, dtype=D)
    z = _block(3, 4, 3)(x)
    assert z.nnz == 2 * 4 * unique_entries(z.grid) and z.density == 1.0
    assert not (unpack_mask(z.bits, z.shape) & redundant_mask(z.grid)).any()
    # The dense map it stands for is the spectrum of a real map.
    dense = z.to_dense()
    torch.testing.assert_close(dense, torch.fft.rfft2(z.to_spatial(), norm="ortho"))
    # to_dense's backward is the adjoint of the fill.
    vals = z.values.detach().clone().requires_grad_(True)
    spec = SpecMap(z.batch, z.channels, z.grid, z.support, values=vals, bits=z.bits)
    assert torch.autograd.gradcheck(
        lambda v: torch.view_as_real(replace(spec, values=v).to_dense()), (vals,)
    )


def test_larger_beta_keeps_fewer_entries():
    x = torch.randn(2, 3, 16, 16)
    m = SpectralConv2d(3, 6, 3, beta=0.0)
    counts = []
    for beta in (0.0, 0.3, 0.6, 1.2):
        m.beta = beta
        counts.append(m(x).nnz)
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]


# --------------------------------------------------------------------------- gradients


def _grads_vs_reference(beta, activation, stride, padding, k, workspace):
    torch.manual_seed(1)
    x = torch.randn(5, 3, 8, 8, dtype=D)
    a = _block(3, 4, 3, beta=beta, activation="tanh")
    b = _block(4, 3, k, padding, stride, beta=beta, activation=activation, seed=2)
    a.workspace_bytes = b.workspace_bytes = workspace  # 1 byte: one item/frequency per step
    z = a(x)
    vals = z.values.detach().clone().requires_grad_(True)
    out = b(SpecMap(z.batch, z.channels, z.grid, z.support, values=vals, bits=z.bits))
    y = out.to_spatial()
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [vals, b.weight, b.bias], g)
    dense = z.to_dense().detach().clone().requires_grad_(True)
    ref = spectral_conv2d_reference(
        dense, b.weight, b.bias, padding=b.padding, stride=stride, beta=beta,
        activation=activation, in_grid=z.grid, in_support=z.support,
    )  # fmt: skip
    yref = torch.fft.irfft2(ref, s=(out.grid,) * 2, norm="ortho")[..., : out.support, : out.support]
    torch.testing.assert_close(y, yref, atol=1e-12, rtol=0)
    want = torch.autograd.grad(yref, [dense, b.weight, b.bias], g)
    mask = unpack_mask(z.bits, z.shape)
    # A stored value also stands for its redundant conjugate partner (hermitian_fill), so
    # its gradient collects the partner's, conjugated.
    perm = (-torch.arange(z.grid)) % z.grid
    partner = want[0].index_select(-2, perm).conj()
    want_vals = want[0] + torch.where(redundant_mask(z.grid).index_select(0, perm), partner, 0)
    torch.testing.assert_close(got[0], want_vals[mask], atol=1e-12, rtol=0)
    torch.testing.assert_close(got[1], want[1], atol=1e-11, rtol=0)
    torch.testing.assert_close(got[2], want[2], atol=1e-11, rtol=0)
    return z.density


@pytest.mark.parametrize(
    ("activation", "stride", "padding", "k", "workspace"),
    [("tanh", 1, 1, 3, 1 << 30), (None, 1, 1, 3, 1), ("tanh", 2, 1, 3, 1), ("tanh", 1, 0, 5, 1)],
)
def test_gradients_match_autograd_at_beta_zero(activation, stride, padding, k, workspace):
    assert _grads_vs_reference(0.0, activation, stride, padding, k, workspace) == 1.0


def test_gradients_are_exact_for_the_thresholded_forward():
    # With beta > 0 the stored compact maps are exactly what backward needs: gradients equal
    # autograd of the thresholded dense forward (dropped entries carry zero gradient).
    density = _grads_vs_reference(0.5, "tanh", 1, 1, 3, 1)
    assert density < 0.9


def test_input_gradient_of_a_spatial_input_and_gradcheck():
    torch.manual_seed(3)
    m = _block(2, 2, 3, activation="tanh")
    x = torch.randn(2, 2, 5, 5, dtype=D, requires_grad=True)
    g = torch.randn(2, 2, 5, 5, dtype=D)
    (gx,) = torch.autograd.grad(m(x).to_spatial(), x, g)
    ref = spectral_conv2d_reference(x, m.weight, m.bias, padding=1, activation="tanh")
    (want,) = torch.autograd.grad(torch.fft.irfft2(ref, s=(5, 5), norm="ortho"), x, g)
    torch.testing.assert_close(gx, want, atol=1e-12, rtol=0)
    xs = torch.randn(1, 2, 4, 4, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda inp, w, b: _apply(m, inp, w, b), (xs, m.weight, m.bias), atol=1e-7
    )


def _apply(m, x, w, b):
    return torch.func.functional_call(m, {"weight": w, "bias": b}, (x,)).to_spatial()


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", SPECNET_NAMES)
def test_models_and_their_spatial_twins(name):
    kw = {"depth": 10} if name == "densenet" else {}
    spec = get_specnet(name, beta=1.0, width=0.125, in_channels=1, num_classes=7, **kw)
    twin = get_specnet(name, spectral=False, width=0.125, in_channels=1, num_classes=7, **kw)
    assert spectral_layers(spec) and not spectral_layers(twin)
    # Same code: same parameter names and shapes, and the same seed gives the same init.
    assert {k: v.shape for k, v in spec.state_dict().items()} == {
        k: v.shape for k, v in twin.state_dict().items()
    }
    for (k, v), (_, u) in zip(spec.state_dict().items(), twin.state_dict().items(), strict=True):
        assert torch.equal(v, u), k
    x = torch.randn(3, 1, 32, 32)
    for model in (spec, twin):
        out = model(x)
        assert out.shape == (3, 7)
        F.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
        assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("head_size", [1, 2, 4, 8])
def test_densenet_head_pools_the_final_map_to_head_size(head_size):
    kw = dict(width=0.25, depth=10, in_channels=1, num_classes=5, head_size=head_size)
    spec = get_specnet("densenet", beta=0.0, **kw)
    twin = get_specnet("densenet", spectral=False, **kw)
    x = torch.randn(2, 1, 32, 32)
    for model in (spec, twin):
        maps: dict = {}
        model.head.register_forward_hook(lambda _m, _i, out, maps=maps: maps.update(out=out))
        logits = model(x)
        out = maps["out"]
        assert out.shape[-2:] == (8, 8)
        # The classifier reads the head_size x head_size average pool of the final map.
        assert model.classifier.in_features == out.shape[1] * head_size**2
        pooled = F.avg_pool2d(out, 8 // head_size).flatten(1)
        torch.testing.assert_close(logits, model.classifier(pooled))
    with pytest.raises(ValueError, match="head_size"):
        get_specnet("densenet", depth=10, head_size=3)


def test_get_specnet_names_and_set_beta():
    m = get_specnet("Spec-VGG-16", width=0.125)
    assert isinstance(m, torch.nn.Module) and len(spectral_layers(m)) == 13
    set_beta(m, 0.25)
    assert all(layer.beta == 0.25 for _, layer in spectral_layers(m))
    set_workspace(m, 4096)
    assert all(layer.workspace_bytes == 4096 for _, layer in spectral_layers(m))
    with pytest.raises(ValueError, match="workspace"):
        set_workspace(m, 0)
    with pytest.raises(ValueError, match="unknown"):
        get_specnet("resnet")


def test_calibrate_sets_preactivation_rms():
    x = torch.randn(8, 1, 32, 32)
    m = get_specnet("lenet", in_channels=1)
    before = calibrate_(m, x, target_rms=1.0)
    assert len(before) == 2
    after = calibrate_(m, x, target_rms=1.0)  # already calibrated: measured RMS ~ target
    assert after == pytest.approx([1.0, 1.0], rel=1e-4)


# --------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    with pytest.raises(ValueError, match="beta"):
        SpectralConv2d(3, 4, 3, beta=-0.1)
    with pytest.raises(ValueError, match="beta"):
        get_specnet("lenet", beta=-1.0)
    with pytest.raises(ValueError, match="beta"):
        spectral_threshold(torch.zeros(2, dtype=torch.complex64), -1.0)
    m = SpectralConv2d(3, 4, 5, padding=0)
    with pytest.raises(ValueError, match="smaller than the 5x5 kernel"):
        m(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="beta"):
        set_beta(torch.nn.Sequential(m), -2.0)
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="square"):
        m(torch.randn(1, 3, 8, 9))
    with pytest.raises(ValueError, match="input channels"):
        m(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="SpecMap"):
        m(torch.randn(1, 3, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="padding"):
        SpectralConv2d(3, 4, 3, padding=3)
    model = get_specnet("lenet", width=0.25)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        model(torch.randn(1, 1, 32, 32))
