"""Profiling-only masks: energies measured by the compiler equal PyTorch's, sweeps, build()."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import tvm_freq
from tvm_freq import Tuning, UntunedWarning
from tvm_freq.calibrate import (
    auto_block,
    calibrate_energies,
    masks_from_energies,
    model_batches,
)
from tvm_freq.data import load_dataset
from tvm_freq.dct import block_dct_np
from tvm_freq.frontend import import_model
from tvm_freq.macs import relax_network_macs

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.pw1 = torch.nn.Conv2d(16, 24, 1)
        self.pw2 = torch.nn.Conv2d(24, 8, 1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        a = torch.relu(self.stem(x))
        b = torch.relu(self.pw2(torch.relu(self.pw1(a))))
        return self.fc(b.mean(dim=(2, 3)))


def _images(n=6):
    import os

    root = os.environ.get("TVM_FREQ_DATA") or (ROOT if ROOT.is_dir() else None)
    if root is None:
        pytest.skip("no real data: set TVM_FREQ_DATA")
    ds = load_dataset("fashion-mnist", "test", root, limit=n, channels=1, pad=0)
    return ds.tensors[0]  # [n, 1, 28, 28] real images


def test_auto_block_follows_the_paper_on_mobilenetv2_224():
    assert [auto_block(s, s) for s in (112, 56, 28, 14, 7)] == [8, 8, 7, 7, 7]
    assert auto_block(10, 6) == 2 and auto_block(11, 13) == 4  # 4 = padded fallback


def test_energies_equal_pytorch_activations_on_real_images():
    net = Net().eval()
    x = _images()
    mod = import_model(net, example_inputs=(x[:2],)).mod
    energies = calibrate_energies(mod, [x[:2], x[2:4], x[4:6]], block=4)
    assert [e.ordinal for e in energies] == [0, 1] and energies[1].weight_shape == (8, 24, 1, 1)
    seen = {}

    def hook(name):
        def record(_m, inputs, output):
            seen.setdefault(name, []).append((inputs[0].double().numpy(), output.double().numpy()))

        return record

    hooks = [net.pw1.register_forward_hook(hook("pw1")), net.pw2.register_forward_hook(hook("pw2"))]
    with torch.no_grad():
        for i in range(0, 6, 2):
            net(x[i : i + 2])
    for h in hooks:
        h.remove()
    for e, name in zip(energies, ("pw1", "pw2"), strict=True):
        conv = getattr(net, name)
        ins = np.concatenate([a for a, _ in seen[name]])
        # The probe sees the conv before its bias add, as the kernel's output masks do.
        bias = conv.bias.detach().double().numpy()[:, None, None]
        outs = np.concatenate([b for _, b in seen[name]]) - bias
        ref_in = (block_dct_np(ins, 4) ** 2).sum(axis=(0, 2, 3))
        ref_out = (block_dct_np(outs, 4) ** 2).sum(axis=(0, 2, 3))
        np.testing.assert_allclose(e.in_energy, ref_in, rtol=1e-4, atol=1e-6 * ref_in.max())
        np.testing.assert_allclose(e.out_energy, ref_out, rtol=1e-4, atol=1e-6 * ref_out.max())


def test_more_energy_keeps_more_coefficients():
    net = Net().eval()
    x = _images()
    mod = import_model(net, example_inputs=(x[:2],)).mod
    energies = calibrate_energies(mod, [x[:2], x[2:4]])
    assert energies[0].block == 7  # 28x28: auto picks 7x7 blocks
    kept = [sum(sum(lm.kin) + sum(lm.kout) for lm in masks_from_energies(energies, e).layers)
            for e in (0.5, 0.9, 0.99, 1.0)]  # fmt: skip
    assert kept == sorted(kept) and kept[0] < kept[-1]
    only_second = masks_from_energies(energies, 0.9, layers=[1])
    assert [lm.ordinal for lm in only_second.layers] == [1] and only_second.num_pointwise == 2
    with pytest.raises(ValueError, match="energy"):
        masks_from_energies(energies, 0.0)


def test_build_with_calibration_batches():
    net = Net().eval()
    x = _images(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        model = tvm_freq.build(net, example_inputs=(x[:2],), calibrate=[x[:2], x[2:4]],
                               energy=0.9, tuning=Tuning(use_shipped=False))  # fmt: skip
        masks = model.report.masks
        assert masks is not None and len(masks.layers) == 2
        # Same masks from a file give the same build decisions.
        again = tvm_freq.build(net, example_inputs=(x[:2],), masks=masks,
                               tuning=Tuning(use_shipped=False))  # fmt: skip
    assert [d.decision for d in model.report.layers] == [d.decision for d in again.report.layers]
    np.testing.assert_allclose(model(x[:2]), again(x[:2]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        tvm_freq.build(net, example_inputs=(x[:2],), masks=masks, calibrate=[x[:2]])
    with pytest.raises(ValueError, match="energy"):
        tvm_freq.build(net, example_inputs=(x[:2],), calibrate=[x[:2]], energy=1.5)
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate_energies(import_model(net, example_inputs=(x[:2],)).mod, [])


def test_network_macs_counts_every_conv_and_the_classifier():
    mod = import_model(Net().eval(), input_shape=(2, 1, 10, 10)).mod
    stem = 2 * 16 * 10 * 10 * 1 * 9
    pw = 2 * 100 * (16 * 24 + 24 * 8)
    fc = 2 * 8 * 10
    assert relax_network_macs(mod) == stem + pw + fc


def test_calibration_accepts_any_batch_size_and_container():
    x = _images(6)
    mod = import_model(Net().eval(), input_shape=(1, 1, 28, 28)).mod
    per_image = calibrate_energies(mod, [x[i : i + 1] for i in range(6)], block=4)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.zeros(6)), batch_size=4
    )  # (images, labels) pairs, batches of 4 then 2
    for data in (x, x.numpy(), [x[:4], x[4:]], iter([x[:5].numpy(), x[5]]), loader):
        got = calibrate_energies(mod, data, block=4)
        for a, b in zip(got, per_image, strict=True):
            np.testing.assert_allclose(a.in_energy, b.in_energy, rtol=1e-5)
            np.testing.assert_allclose(a.out_energy, b.out_energy, rtol=1e-5)


def test_calibration_regroups_into_the_model_batch():
    x = _images(6).numpy()
    batches = list(model_batches([x[:1], x[1:4]], (2, 1, 28, 28)))
    assert [b.shape for b in batches] == [(2, 1, 28, 28)] * 2
    np.testing.assert_array_equal(np.concatenate(batches), x[:4])
    with pytest.warns(UserWarning, match="1 calibration sample"):
        assert len(list(model_batches(x[:3], (2, 1, 28, 28)))) == 1


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 28, 28)), np.zeros((2, 3, 28, 28)), np.zeros((2, 1, 32, 32)),
     np.zeros((1, 1, 1, 28, 28))],
)  # fmt: skip
def test_unusable_calibration_data_names_the_expected_shape(bad):
    net = Net().eval()
    with pytest.raises(ValueError, match=r"model's input is \(1, 1, 28, 28\)"):
        tvm_freq.build(net, input_shape=(1, 1, 28, 28), calibrate=bad,
                       tuning=Tuning(use_shipped=False))  # fmt: skip
    with pytest.raises(TypeError, match="arrays or tensors"):
        list(model_batches(["not an image"], (1, 1, 28, 28)))


def test_batch1_onnx_model_calibrates_with_batches_of_4(tmp_path):
    from tvm_freq.models import export_onnx

    x = _images(8)
    path = export_onnx(Net().eval(), tmp_path / "net.onnx", (1, 1, 28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedWarning)
        model = tvm_freq.build(str(path), calibrate=[x[:4], x[4:]], energy=0.9,
                               tuning=Tuning(use_shipped=False))  # fmt: skip
    assert model.report.masks is not None and len(model.report.masks.layers) == 2
    assert model(x[:1].numpy()).shape == (1, 10)
