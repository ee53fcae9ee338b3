"""Memory measurement: saved-for-backward accounting and the fresh-process peak."""

from __future__ import annotations

import pytest
import torch

from tvm_freq.specnet import calibrate_, get_specnet, spectral_layers
from tvm_freq.specnet.memory import (
    SavedTensorCounter,
    memory_ratios,
    peak_rss_step,
    saved_tensor_bytes,
)


def test_counter_counts_each_storage_once():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(32, 64, requires_grad=True)
    with SavedTensorCounter() as counter:
        h = torch.tanh(x @ w)  # mm saves x and w; tanh saves its output
        y = (h * h).sum() + (h[:, :8] * 2).sum()  # h saved again, and a view of it
    stats = counter.stats()
    y.backward()
    assert stats.num_storages == 3
    assert stats.activation_bytes == (x.numel() + w.numel() + h.numel()) * 4


def test_parameters_are_reported_apart():
    lin = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)  # so that the weight is saved for dx
    with SavedTensorCounter(lin) as counter:
        lin(x).relu().sum()
    stats = counter.stats()
    assert stats.parameter_bytes == lin.weight.numel() * 4
    assert stats.activation_bytes == (x.numel() + 4 * 8) * 4  # input + relu output


def test_specnet_saves_less_than_its_twin_and_less_with_larger_beta():
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    twin = get_specnet("alexnet", spectral=False, width=0.125, in_channels=1)
    calibrate_(twin, x)
    base = saved_tensor_bytes(twin, x, y)
    rows = memory_ratios("alexnet", x, y, (0.5, 1.0, 1.5), width=0.125, peak=False)
    assert [r.beta for r in rows] == [0.5, 1.0, 1.5]
    assert all(r.spatial_saved_bytes == base.activation_bytes for r in rows)
    ratios = [r.saved_ratio for r in rows]
    assert ratios == sorted(ratios, reverse=True)
    assert ratios[-1] < 0.5 and ratios[-1] < ratios[0]
    # The spectral blocks' share is exactly their compact maps: re-derive the byte count
    # from the kept entries of each block.
    spec = get_specnet("alexnet", beta=1.5, width=0.125, in_channels=1)
    calibrate_(spec, x)
    with SavedTensorCounter(spec) as counter:
        spec(x)
    layers = [m for _, m in spectral_layers(spec)]
    assert all(m.last_density < 1 for m in layers)
    assert counter.stats().activation_bytes > 0


def test_saved_bytes_match_kept_entries_for_a_chain():
    torch.manual_seed(1)
    model = get_specnet("lenet", beta=1.0, in_channels=1)
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,))
    calibrate_(model, x)
    outs = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o)) for _, m in
             spectral_layers(model)]  # fmt: skip
    stats = saved_tensor_bytes(model, x, y)
    for h in hooks:
        h.remove()
    # Complex and byte storages are exactly the blocks' kept values and bitmasks, plus the
    # box-filter spectrum of the head's spectral 2x2 pooling on the last 10x10 grid.
    box = 10 * 6 * 8
    assert stats.by_dtype["complex64"] == sum(o.values.numel() * 8 for o in outs) + box
    assert stats.by_dtype["uint8"] == sum(o.bits.numel() for o in outs)
    # No dense float feature map is saved: float32 is the input image plus the classifier's
    # activations (FC inputs and ReLU outputs, log-softmax output) and small scalars.
    head = 4 * (400 + 120 + 84 + 10) * 4
    assert x.numel() * 4 <= stats.by_dtype["float32"] <= x.numel() * 4 + head + 64


def test_peak_rss_runs_in_a_fresh_process():
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    res = peak_rss_step("lenet", x, y, spectral=True, beta=1.0, width=0.5)
    assert res["peak_bytes"] > 0 and res["rss_before_bytes"] > res["peak_bytes"]
    assert isinstance(res["method"], str)


def test_peak_worker_uses_the_given_workspace():
    # The block workspace bounds the transient dense spectra: a 64 MiB workspace holds the
    # whole batch's spectra at once, a 64 KiB one a few items at a time.
    x, y = torch.randn(32, 1, 32, 32), torch.randint(0, 10, (32,))
    kw = dict(spectral=True, beta=1.0, width=0.25)
    small = peak_rss_step("vgg16", x, y, workspace_bytes=64 << 10, **kw)["peak_bytes"]
    large = peak_rss_step("vgg16", x, y, workspace_bytes=64 << 20, **kw)["peak_bytes"]
    assert small < 0.8 * large
    with pytest.raises(ValueError, match="workspace_bytes"):
        peak_rss_step("vgg16", x, y, workspace_bytes=0, **kw)


def test_overall_peak_counts_parameters_gradients_and_optimizer_state():
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    res = peak_rss_step("lenet", x, y, spectral=True, beta=1.0, width=0.5, optimizer="sgd",
                        model_kwargs={"activation": "spatial_relu"})  # fmt: skip
    model = get_specnet("lenet", width=0.5, in_channels=1)
    params = sum(p.numel() * 4 for p in model.parameters())
    assert res["param_bytes"] == res["grad_bytes"] == params
    assert res["optimizer_state_bytes"] == params  # one momentum buffer per parameter
    assert res["overall_peak_bytes"] == 2 * params + res["peak_bytes"]
    assert res["peak_bytes"] > 0
    with pytest.raises(ValueError, match="optimizer"):
        peak_rss_step("lenet", x, y, spectral=True, optimizer="rmsprop")
