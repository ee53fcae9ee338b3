"""Photo folders for distillation (:mod:`tvm_freq.train.images`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tvm_freq.train.images import (
    ImageTransform,
    PhotoViews,
    UnreadableImageError,
    find_images,
    split_holdout,
)


def _write_photos(folder, n: int, size=(40, 30)) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_find_images_is_recursive_sorted_and_ignores_other_files(tmp_path):
    _write_photos(tmp_path / "a", 2)
    _write_photos(tmp_path / "b", 1)
    (tmp_path / "notes.txt").write_text("not an image")
    found = find_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/p0.jpg",
        "a/p1.png",
        "b/p0.jpg",
    ]


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no images"):
        find_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images(tmp_path / "nowhere")


def test_unreadable_image_names_the_file(tmp_path):
    _write_photos(tmp_path, 2)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(UnreadableImageError, match="broken.jpg"):
        PhotoViews(find_images(tmp_path), ImageTransform(16))


def test_views_are_reproducible_normalised_and_sized(tmp_path):
    paths = _write_photos(tmp_path, 3)
    tf = ImageTransform(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    a, b = PhotoViews(paths, tf, 10, seed=3), PhotoViews(paths, tf, 10, seed=3)
    assert len(a) == 10
    for i in range(10):
        assert a[i].shape == (3, 16, 16)
        assert torch.equal(a[i], b[i])
        assert float(a[i].min()) >= -1.0 and float(a[i].max()) <= 1.0
    assert not torch.equal(a[0], PhotoViews(paths, tf, 10, seed=4)[0])
    center = PhotoViews(paths, tf, random=False)
    assert len(center) == 3 and torch.equal(center[0], tf.center(center.photos[0]))


def test_holdout_split_is_by_photo_and_disjoint(tmp_path):
    paths = _write_photos(tmp_path, 10)
    train, held = split_holdout(paths, 0.2, seed=0)
    assert len(held) == 2 and len(train) == 8
    assert not set(train) & set(held)
    assert split_holdout(paths, 0.2, seed=0) == (train, held)
    with pytest.raises(ValueError, match="at least 2 photos"):
        split_holdout(paths[:1])


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"size": 0}, "size"), ({"size": 32, "resize": 16}, "resize"), ({"std": (1, 0, 1)}, "std")],
)
def test_bad_transform_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        ImageTransform(**kw)
