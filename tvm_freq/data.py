"""Loaders for the gzipped IDX datasets Fashion-MNIST and MNIST.

Files: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``. Images have a 16-byte
header (magic 2051, count, rows, cols), labels an 8-byte one (magic 2049, count).

Where the files are looked for, first match wins:

1. the ``root`` argument, else the ``TVM_FREQ_DATA`` environment variable: a
   directory holding the four files, or holding ``fashion-mnist/`` and ``mnist/``;
2. Debian's ``dataset-fashion-mnist`` location, ``/usr/share/datasets/<name>``.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "SYSTEM_DIR",
    "find_dataset_dir",
    "read_idx_images",
    "read_idx_labels",
    "load_dataset",
]

ENV_VAR = "TVM_FREQ_DATA"
SYSTEM_DIR = Path("/usr/share/datasets")
# name -> (mean, std) of the raw 28x28 training pixels scaled to [0, 1]
DATASETS: dict[str, tuple[float, float]] = {
    "fashion-mnist": (0.2860, 0.3530),
    "mnist": (0.1307, 0.3081),
}
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def find_dataset_dir(
    name: str = "fashion-mnist", root: str | os.PathLike | None = None, split: str = "train"
) -> Path:
    """Return the directory that holds a dataset's IDX files.

    Parameters
    ----------
    name : {"fashion-mnist", "mnist"}
        Dataset.
    root : str or os.PathLike, optional
        A directory with the files or with a ``<name>/`` subdirectory; defaults to
        ``$TVM_FREQ_DATA``, then ``/usr/share/datasets/<name>``.
    split : {"train", "test"}
        The split whose image file must be there.

    Returns
    -------
    pathlib.Path
        The directory.

    Raises
    ------
    FileNotFoundError
        Naming the file that was missing and every place looked at.
    """
    _check_name(name)
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    want = _FILES[split][0]
    if root is None and os.environ.get(ENV_VAR):
        root = os.environ[ENV_VAR]
    candidates = [Path(root), Path(root) / name] if root is not None else []
    candidates.append(SYSTEM_DIR / name)
    for d in candidates:
        if (d / want).is_file():
            return d
    looked = ", ".join(str(d) for d in candidates)
    raise FileNotFoundError(
        f"{name}: {want} not found (looked in {looked}); pass a data directory or set "
        f"{ENV_VAR} to a directory containing {name}/ or the IDX files"
    )


def _read_exact(path: Path, header: int, count: int | None, item: int) -> tuple[bytes, bytes]:
    with gzip.open(path, "rb") as f:
        head = f.read(header)
        if len(head) < header:
            raise ValueError(f"{path}: truncated header ({len(head)} of {header} bytes)")
        n = struct.unpack(">I", head[4:8])[0]
        take = n if count is None else min(n, count)
        body = f.read(take * item)
        if len(body) != take * item:
            raise ValueError(
                f"{path}: header says {n} items of {item} bytes but the file ends after "
                f"{len(body) // item}"
            )
        if count is None and f.read(1):
            raise ValueError(f"{path}: trailing data after {n} items")
    return head, body


def read_idx_images(path: str | os.PathLike, limit: int | None = None) -> np.ndarray:
    """Read a gzipped IDX3 image file.

    Parameters
    ----------
    path : str or os.PathLike
        ``*-images-idx3-ubyte.gz``.
    limit : int, optional
        Read only the first ``limit`` images.

    Returns
    -------
    numpy.ndarray
        uint8 ``[N, rows, cols]``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with gzip.open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 16:
        raise ValueError(f"{path}: truncated header ({len(head)} of 16 bytes)")
    magic, _, rows, cols = struct.unpack(">IIII", head)
    if magic != _IMAGE_MAGIC:
        raise ValueError(f"{path}: bad magic number {magic}, expected {_IMAGE_MAGIC} (IDX3 images)")
    _, body = _read_exact(path, 16, limit, rows * cols)
    return np.frombuffer(body, dtype=np.uint8).reshape(-1, rows, cols)


def read_idx_labels(path: str | os.PathLike, limit: int | None = None) -> np.ndarray:
    """Read a gzipped IDX1 label file.

    Parameters
    ----------
    path : str or os.PathLike
        ``*-labels-idx1-ubyte.gz``.
    limit : int, optional
        Read only the first ``limit`` labels.

    Returns
    -------
    numpy.ndarray
        uint8 ``[N]``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    with gzip.open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise ValueError(f"{path}: truncated header ({len(head)} of 8 bytes)")
    magic = struct.unpack(">I", head[:4])[0]
    if magic != _LABEL_MAGIC:
        raise ValueError(f"{path}: bad magic number {magic}, expected {_LABEL_MAGIC} (IDX1 labels)")
    _, body = _read_exact(path, 8, limit, 1)
    return np.frombuffer(body, dtype=np.uint8).copy()


def load_dataset(
    name: str = "fashion-mnist",
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    channels: int = 3,
    pad: int = 2,
    normalize: bool = True,
) -> TensorDataset:
    """Load Fashion-MNIST or MNIST as a ``TensorDataset`` of ``(image, label)``.

    Images are zero padded by ``pad`` pixels on each side (28x28 -> 32x32 by
    default), scaled to ``[0, 1]``, normalised with the dataset's training mean and
    std, and repeated to ``channels`` channels.

    Parameters
    ----------
    name : {"fashion-mnist", "mnist"}
        Dataset.
    split : {"train", "test"}
        Which split.
    root : str or os.PathLike, optional
        Data directory (see :func:`find_dataset_dir`).
    limit : int, optional
        Keep only the first ``limit`` examples (only those are decompressed).
    channels : int
        1, or 3 to repeat the grey channel for RGB models.
    pad : int
        Zero padding on each side, in pixels.
    normalize : bool
        Subtract the mean and divide by the std.

    Returns
    -------
    torch.utils.data.TensorDataset
        float32 images ``[N, channels, 28 + 2 pad, 28 + 2 pad]`` and int64 labels ``[N]``.
    """
    _check_name(name)
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    d = find_dataset_dir(name, root, split)
    img_file, lbl_file = (d / f for f in _FILES[split])
    for f in (img_file, lbl_file):
        if not f.is_file():
            raise FileNotFoundError(f"{name} {split}: {f.name} not found in {d}")
    images = read_idx_images(img_file, limit)
    labels = read_idx_labels(lbl_file, limit)
    if len(images) != len(labels):
        raise ValueError(f"{d}: {len(images)} images but {len(labels)} labels in the {split} split")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    if pad:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    if normalize:
        mean, std = DATASETS[name]
        x = (x - mean) / std
    x = x[:, None].expand(-1, channels, -1, -1).contiguous()
    return TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))
