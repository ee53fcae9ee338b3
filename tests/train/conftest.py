"""Fixtures of the training tests: a tiny synthetic Fashion-MNIST."""

import gzip
import struct

import numpy as np
import pytest


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Small synthetic Fashion-MNIST-shaped IDX files: class = which quadrant is bright."""
    root = tmp_path_factory.mktemp("data") / "fashion-mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 48), ("t10k", 16)):
        labels = rng.integers(0, 4, n)
        imgs = rng.integers(0, 40, (n, 28, 28))
        for i, lab in enumerate(labels):
            r, c = divmod(int(lab), 2)
            imgs[i, r * 14 : r * 14 + 14, c * 14 : c * 14 + 14] += 200
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + imgs.astype(np.uint8).tobytes())
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())
    return str(root.parent)
