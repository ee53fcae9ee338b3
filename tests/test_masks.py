"""Tests for tvm_freq.masks: the mask file format, validation, export and rebuild."""

import json

import pytest
import torch

from tvm_freq.freq import FreqConfig, FreqPointwiseConv2d, apply_, freq_layers, squash
from tvm_freq.freq.export import apply_masks, check_masks_match, export, masks_from_model
from tvm_freq.masks import (
    FORMAT,
    LayerMask,
    MaskFile,
    MaskMismatchError,
    load_masks,
    save_masks,
)
from tvm_freq.models import get_model

X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
W = 0.25  # the smallest MobileNetV2 keeps these tests fast


@pytest.fixture(scope="module")
def squashed():
    """A small MobileNetV2 with random learned bands, squashed."""
    model = get_model("mobilenetv2-cifar", width_mult=W)
    apply_(
        model, FreqConfig(4, "both"), example_input=X, filter_fn=lambda m, n: n != "features.18.0"
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in freq_layers(model):
            for p in (layer.fcmask_in, layer.fcmask_out):
                p.copy_(torch.rand(p.shape, generator=g))
    return squash(model).eval()


def _doc(**layer):
    lm = {"name": "conv", "ordinal": 0, "weight_shape": [2, 3, 1, 1], "block": 2}
    lm |= {"kin": [4, 1, 0], "kout": [4, 4]}
    lm |= layer
    return {
        "format": FORMAT,
        "version": 1,
        "padding": "zero-bottom-right",
        "model": {"num_pointwise": 1, "name": None},
        "layers": [lm],
    }


def test_masks_from_model_and_round_trip(squashed, tmp_path):
    mf = masks_from_model(squashed, X, "mobilenetv2-cifar")
    assert mf.num_pointwise == 34 and len(mf.layers) == 33  # features.18.0 not wrapped
    assert [lm.ordinal for lm in mf.layers] == list(range(33))
    first = mf.layers[1]
    assert first.name == "features.2.conv.0.0" and first.weight_shape == (48, 8, 1, 1)
    layer = squashed.get_submodule(first.name)
    kin, kout = layer.kept_counts()
    assert list(first.kin) == kin.tolist() and list(first.kout) == kout.tolist()
    path = save_masks(tmp_path / "m.json", mf)
    doc = json.loads(path.read_text())
    assert doc["format"] == "tvm_freq.masks" and doc["version"] == 1
    assert doc["padding"] == "zero-bottom-right"
    # Written from a model that applies the masks: every listed layer must be banded.
    assert doc["model"] == {"num_pointwise": 34, "name": "mobilenetv2-cifar", "trained": True}
    assert set(doc["layers"][0]) == {"name", "ordinal", "weight_shape", "block", "kin", "kout"}
    assert len(path.read_text().splitlines()) == 33 + 8  # one line per layer
    assert load_masks(path) == mf


def test_where_in_leaves_outputs_full(tmp_path):
    model = get_model("mobilenetv2-cifar", width_mult=W)
    apply_(model, FreqConfig(2, "in"), example_input=X)
    mf = masks_from_model(squash(model), X)
    assert all(set(lm.kout) == {4} for lm in mf.layers)


def test_soft_model_is_rejected():
    model = get_model("mobilenetv2-cifar", width_mult=W)
    apply_(model, FreqConfig(2), example_input=X)
    with pytest.raises(ValueError, match="squash"):
        masks_from_model(model, X)


def test_export_and_rebuild_from_mask_file(squashed, tmp_path):
    mf = export(
        squashed,
        tmp_path / "m.json",
        tmp_path / "w.pt",
        example_input=X,
        model_name="mobilenetv2-cifar",
    )
    assert (tmp_path / "m.json").is_file()
    # The state dict is the dense model's: it loads strictly into a fresh plain model.
    plain = get_model("mobilenetv2-cifar", width_mult=W, seed=7)
    plain.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    dense = get_model("mobilenetv2-cifar", width_mult=W)
    dense.load_state_dict(plain.state_dict())
    # Rebuild: plain model + mask file == the squashed model.
    apply_masks(plain, load_masks(tmp_path / "m.json"), example_input=X)
    assert isinstance(plain.get_submodule("features.2.conv.0.0"), FreqPointwiseConv2d)
    x = torch.randn(2, 3, 16, 16)
    want = squashed.features(x)
    torch.testing.assert_close(plain.features(x), want, atol=1e-4, rtol=1e-4)
    assert masks_from_model(plain, X, "mobilenetv2-cifar") == mf
    # ... and the masks matter: the dense model computes something else.
    assert (dense.features(x) - want).norm() > 0.1 * want.norm()


def test_onnx_export_is_the_dense_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = get_model("mobilenetv2-cifar", width_mult=W)
    apply_(model, FreqConfig(2, "in"), example_input=X)
    export(squash(model), tmp_path / "m.json", onnx_path=tmp_path / "m.onnx", example_input=X)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 52  # every conv, plain (no DCT ops in the graph)
    assert not any(n.op_type in ("MatMul", "Einsum") for n in graph.node)


def test_mismatched_mask_file_names_the_layer(squashed):
    mf = masks_from_model(squashed, X)
    other = get_model("mobilenetv2-cifar", width_mult=0.5)  # same names, other shapes
    with pytest.raises(MaskMismatchError, match="features.1.conv.1") as err:
        check_masks_match(mf, other, X)
    assert err.value.layer == "features.1.conv.1" and "weight_shape" in str(err.value)
    lm = mf.layers[5]
    moved = LayerMask(lm.name, 9, lm.weight_shape, lm.block, lm.kin, lm.kout)
    bad = MaskFile(tuple(x for x in mf.layers if x.ordinal not in (5, 9)) + (moved,), 34)
    with pytest.raises(MaskMismatchError, match=lm.name) as err:
        check_masks_match(bad, squashed, X)
    assert "ordinal 9" in str(err.value)
    renamed = LayerMask("features.99.conv", 40, lm.weight_shape, lm.block, lm.kin, lm.kout)
    with pytest.raises(MaskMismatchError, match="features.99.conv"):
        check_masks_match(MaskFile((renamed,), 41), squashed, X)
    with pytest.raises(MaskMismatchError, match="34 eligible"):
        check_masks_match(MaskFile(mf.layers, 35), squashed, X)
    with pytest.raises(MaskMismatchError, match="features.1.conv.1"):
        apply_masks(other, mf)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": "onnx"}, "unknown format 'onnx'"),
        ({"version": 2}, "version 2.*version 1"),
        ({"padding": "symmetric"}, "padding"),
        ({"layers": "x"}, "'layers' must be a list"),
        ({"model": {}}, "num_pointwise"),
    ],
)
def test_load_rejects_bad_headers(tmp_path, change, match):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_doc() | change))
    with pytest.raises(ValueError, match=match):
        load_masks(path)


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        ({"kin": [5, 1, 0]}, r"kin counts must be ints in \[0, 4\]"),
        ({"kout": [4, -1]}, "kout counts"),
        ({"kin": [4, 1]}, "kin has 2 entries but weight_shape .* has 3 input"),
        ({"kout": [4, 4, 4]}, "kout has 3 entries"),
        ({"block": 9}, "block must be"),
        ({"weight_shape": [2, 3, 3, 3]}, "weight_shape"),
        ({"ordinal": 1}, "out of range"),
    ],
)
def test_load_rejects_bad_layers(tmp_path, layer, match):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_doc(**layer)))
    with pytest.raises(ValueError, match=match) as err:
        load_masks(path)
    assert str(path) in str(err.value)


def test_load_missing_and_invalid_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_masks(tmp_path / "nope.json")
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_masks(path)
    path.write_text(json.dumps(_doc()))
    mf = load_masks(path)
    assert mf.layers[0].kin == (4, 1, 0) and mf.model_name is None


def test_trained_flag_reads_old_files_and_rejects_bad_values(tmp_path):
    """Files written before the flag are profiling-only masks; a non-boolean is refused."""
    lm = LayerMask("a", 0, (2, 3, 1, 1), 2, [1, 2, 3], [4, 4])
    doc = MaskFile((lm,), 1).to_dict()
    assert doc["model"]["trained"] is False
    del doc["model"]["trained"]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    assert load_masks(tmp_path / "old.json").trained is False
    doc["model"]["trained"] = "yes"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="trained must be true or false"):
        load_masks(tmp_path / "bad.json")


def test_maskfile_validation():
    lm = LayerMask("a", 0, (2, 3, 1, 1), 2, [1, 2, 3], [4, 4])
    assert lm.in_channels == 3 and lm.out_channels == 2
    with pytest.raises(ValueError, match="twice"):
        MaskFile((lm, LayerMask("b", 0, (2, 3, 1, 1), 2, [1, 2, 3], [4, 4])), 2)
    with pytest.raises(ValueError, match="twice"):
        MaskFile((lm, LayerMask("a", 1, (2, 3, 1, 1), 2, [1, 2, 3], [4, 4])), 2)
    with pytest.raises(ValueError, match="ints"):
        LayerMask("a", 0, (2, 3, 1, 1), 2, [1, 2, True], [4, 4])
