"""SpecNet -> Relax: the lowering is exact and the compiled module matches PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import tvm

import tvm_freq
from tvm_freq.pipeline import UntunedWarning
from tvm_freq.specnet import SPECNET_NAMES, calibrate_, get_specnet, spectral_layers
from tvm_freq.specnet.relax_import import lower_specnet, specnet_to_relax


def _trained_like(name: str, beta: float, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = get_specnet(name, beta=beta, width=0.25, in_channels=1, **kw)
    calibrate_(model, torch.randn(16, 1, 32, 32))
    with torch.no_grad():  # non-zero biases, so the DC path is exercised too
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("name", SPECNET_NAMES)
def test_lowered_module_matches_the_training_path(name):
    kw = {"depth": 10} if name == "densenet" else {}
    model = _trained_like(name, beta=0.8, **kw)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = lower_specnet(model, x)(x)
    assert max(m.last_density for _, m in spectral_layers(model)) < 0.9  # beta is active
    torch.testing.assert_close(out, ref, atol=1e-5 * float(ref.abs().max()), rtol=0)


def test_spec_lenet_imports_as_standard_ops():
    model = _trained_like("lenet", beta=0.8)
    mod = specnet_to_relax(model, torch.randn(2, 1, 32, 32))
    assert isinstance(mod, tvm.IRModule)
    text = mod.script()
    assert "R.matmul" in text and "R.tanh" in text and "fft" not in text.lower()


def test_compiled_spec_lenet_matches_pytorch():
    model = _trained_like("lenet", beta=0.8)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    densities = [m.last_density for _, m in spectral_layers(model)]
    assert all(0 < d < 0.9 for d in densities)  # the threshold really drops entries
    model.train()  # build compiles inference (eval) whatever the model's mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        compiled = tvm_freq.build(model, input_shape=tuple(x.shape))
    got = compiled(x)
    assert got.shape == ref.shape
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < 1e-4, rel
    # The model given to build is untouched: still the compact training path.
    assert not any(m.lowering for _, m in spectral_layers(model))
    assert model.training


def test_rejects_models_without_spectral_blocks():
    twin = get_specnet("lenet", spectral=False, width=0.25)
    with pytest.raises(ValueError, match="no SpectralConv2d"):
        specnet_to_relax(twin, torch.randn(1, 3, 32, 32))
