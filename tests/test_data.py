"""Tests for tvm_freq.data: IDX loaders on real Fashion-MNIST / MNIST files and bad files."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tvm_freq.data import DATASETS, find_dataset_dir, load_dataset, read_idx_images


def _data_root() -> Path | None:
    # Tests (only) may fall back to the shared checkout next to the repository.
    env = os.environ.get("TVM_FREQ_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root if root.is_dir() else None


ROOT = _data_root()
needs_data = pytest.mark.skipif(
    ROOT is None, reason="no real data: set TVM_FREQ_DATA to a dir with fashion-mnist/ and mnist/"
)


def _write_idx(d: Path, prefix: str, images: np.ndarray, labels: np.ndarray, magic=2051):
    d.mkdir(parents=True, exist_ok=True)
    n, r, c = images.shape
    with gzip.open(d / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", magic, n, r, c) + images.astype(np.uint8).tobytes())
    with gzip.open(d / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


@needs_data
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_real_images(name, split):
    ds = load_dataset(name, split, ROOT, limit=300)
    x, y = ds.tensors
    assert x.shape == (300, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.min() >= 0 and y.max() <= 9
    assert len(torch.unique(y)) >= 8  # real labels, not a constant
    mean, std = DATASETS[name]
    background = -mean / std
    # 2-pixel zero border on each side, normalised.
    border = torch.cat([x[..., :2, :].flatten(), x[..., -2:, :].flatten(), x[..., :2].flatten()])
    torch.testing.assert_close(border, torch.full_like(border, background))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    raw = x[:, 0, 2:30, 2:30] * std + mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5 and raw.max() > 0.9
    # Normalisation statistics are those of the data (approximately, 300 images).
    assert abs(float(raw.mean()) - mean) < 0.05


@needs_data
def test_channels_limit_and_env_var(monkeypatch):
    one = load_dataset("fashion-mnist", "test", ROOT, limit=10, channels=1, pad=0, normalize=False)
    x, _ = one.tensors
    assert x.shape == (10, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    monkeypatch.setenv("TVM_FREQ_DATA", str(ROOT))
    assert find_dataset_dir("mnist") == ROOT / "mnist"
    via_env = load_dataset("fashion-mnist", "test", limit=10, channels=1, pad=0, normalize=False)
    assert torch.equal(via_env.tensors[0], x)
    # The directory of the files themselves works too.
    direct = load_dataset("fashion-mnist", "test", ROOT / "fashion-mnist", limit=10, channels=1)
    assert direct.tensors[0].shape == (10, 1, 32, 32)


def test_synthetic_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7)
    _write_idx(tmp_path / "mnist", "t10k", imgs, labels)
    ds = load_dataset("mnist", "test", tmp_path, channels=1, normalize=False)
    x, y = ds.tensors
    np.testing.assert_allclose(x[:, 0, 2:30, 2:30].numpy(), imgs / 255.0, atol=1e-7)
    assert y.tolist() == labels.tolist()
    assert len(load_dataset("mnist", "test", tmp_path, limit=3)) == 3


def test_missing_files_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("TVM_FREQ_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        find_dataset_dir("fashion-mnist", tmp_path / "nowhere")
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "mnist", "train", rng.integers(0, 9, (2, 28, 28)), np.zeros(2))
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", "test", tmp_path)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", "train", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar10", "test", tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist", "val", tmp_path)


def test_bad_files_are_rejected(tmp_path):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 255, (3, 28, 28)), np.zeros(3)
    _write_idx(tmp_path / "magic", "t10k", imgs, labels, magic=2049)
    with pytest.raises(ValueError, match="bad magic number 2049"):
        load_dataset("mnist", "test", tmp_path / "magic")
    _write_idx(tmp_path / "count", "t10k", imgs, np.zeros(2))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        load_dataset("mnist", "test", tmp_path / "count")
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(struct.pack(">IIII", 2051, 5, 28, 28) + bytes(28 * 28 * 2))
    with pytest.raises(ValueError, match="ends after 2"):
        read_idx_images(short)
    with gzip.open(short, "wb") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ValueError, match="truncated header"):
        read_idx_images(short)
