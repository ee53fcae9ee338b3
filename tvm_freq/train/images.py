"""Unlabelled photos for distillation: a folder of JPEG/PNG files, read with Pillow.

:func:`find_images` lists a folder, :func:`split_holdout` keeps some photos out of
training, :class:`ImageTransform` is the model's resize, crop and normalisation, and
:class:`PhotoViews` turns a few photos into many training views (random crops and
flips, reproducible from a seed). No labels are read: the teacher model labels them.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageTransform",
    "UnreadableImageError",
    "find_images",
    "load_image",
    "split_holdout",
    "PhotoViews",
]

#: File name suffixes :func:`find_images` collects (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: ImageNet channel statistics, the default normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnreadableImageError(ValueError):
    """A file in the image folder is not an image Pillow can decode."""


def _pil():
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - pillow is a dependency
        raise ImportError("reading photos needs Pillow: pip install pillow") from err
    return Image


@dataclass(frozen=True)
class ImageTransform:
    """A model's input preprocessing: resize the short side, crop, normalise.

    Parameters
    ----------
    size : int
        Side of the square crop the model reads (260 for EfficientNet-Lite2).
    resize : int, optional
        Short side after resizing, before the crop. Default ``round(size / 0.875)``,
        the usual ImageNet ratio.
    mean, std : tuple of 3 floats
        Per-channel normalisation of ``[0, 1]`` RGB values. ImageNet's by default.
    """

    size: int = 224
    resize: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive int, got {self.size!r}")
        if self.resize is not None and (
            isinstance(self.resize, bool) or not isinstance(self.resize, int)
        ):
            raise ValueError(f"resize must be an int or None, got {self.resize!r}")
        if self.resize is not None and self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be at least size ({self.size})")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"{name} must have 3 values (RGB), got {value!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std!r}")

    @property
    def short_side(self) -> int:
        """Short side of the resized image."""
        return self.resize if self.resize is not None else round(self.size / 0.875)

    def to_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """Normalise an ``[H, W, 3]`` uint8 crop into a ``[3, H, W]`` float tensor."""
        x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std

    def center(self, image) -> torch.Tensor:
        """The evaluation view: resize, then the central crop."""
        image = _resize_short(image, self.short_side)
        w, h = image.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        crop = image.crop((left, top, left + self.size, top + self.size))
        return self.to_tensor(np.asarray(crop))


def _resize_short(image, short: int):
    w, h = image.size
    scale = short / min(w, h)
    size = (max(short, round(w * scale)), max(short, round(h * scale)))
    return image.resize(size, _pil().Resampling.BILINEAR)


def find_images(folder: str | os.PathLike) -> list[Path]:
    """All image files below ``folder`` (recursively), sorted by path.

    Parameters
    ----------
    folder : str or os.PathLike
        A folder of ordinary photos (``IMAGE_SUFFIXES``); other files are ignored.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    FileNotFoundError
        The folder does not exist.
    ValueError
        It holds no image file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(
            f"image folder {str(root)!r} holds no images "
            f"(looked for {', '.join(IMAGE_SUFFIXES)}, recursively)"
        )
    return paths


def load_image(path: str | os.PathLike):
    """Open an image as RGB, fully decoded.

    Raises
    ------
    UnreadableImageError
        Pillow cannot decode the file; the message names it.
    """
    Image = _pil()
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(f"cannot read image {str(path)!r}: {err}") from err


def split_holdout(
    paths: Sequence[Path], fraction: float = 0.2, seed: int = 0
) -> tuple[list[Path], list[Path]]:
    """Split photos into training and held-out sets, by whole photo.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        The photos.
    fraction : float
        Share of photos held out, in ``(0, 1)``; at least one photo on each side.
    seed : int
        Fixes the split.

    Returns
    -------
    (train, held_out) : two lists of pathlib.Path
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    if len(paths) < 2:
        raise ValueError(f"need at least 2 photos to hold some out, got {len(paths)}")
    order = list(paths)
    random.Random(seed).shuffle(order)
    n_held = min(len(order) - 1, max(1, math.floor(len(order) * fraction)))
    return sorted(order[n_held:]), sorted(order[:n_held])


class PhotoViews(torch.utils.data.Dataset):
    """Many views of a few photos: random-resized crops and horizontal flips.

    View ``i`` is photo ``i % len(photos)``, cropped and flipped by a generator seeded
    with ``(seed, i)``, so a dataset is the same on every run and on every rank.
    Decoded photos are cached after their short side is resized to ``max_side``.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        Photos (all are decoded once, up front, so bad files fail early).
    transform : ImageTransform
        The model's preprocessing.
    views : int
        Dataset length.
    scale : (float, float)
        Range of the crop's area as a share of the resized photo.
    flip : bool
        Flip half of the views horizontally.
    random : bool
        ``False``: every view is the transform's central crop (for evaluation).
    seed : int
    """

    def __init__(
        self,
        paths: Sequence[Path],
        transform: ImageTransform,
        views: int | None = None,
        *,
        scale: tuple[float, float] = (0.25, 1.0),
        flip: bool = True,
        random: bool = True,
        seed: int = 0,
    ):
        if not paths:
            raise ValueError("no photos given")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale!r}")
        self.transform = transform
        self.views = len(paths) if views is None else int(views)
        if self.views < 1:
            raise ValueError(f"views must be positive, got {views!r}")
        self.scale = scale
        self.flip = flip
        self.random = random
        self.seed = seed
        # Cropping from a moderately larger copy keeps detail without holding full photos.
        side = 2 * transform.short_side
        self.photos = [_resize_short(load_image(p), side) for p in paths]

    def __len__(self) -> int:
        return self.views

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.views:
            raise IndexError(i)
        photo = self.photos[i % len(self.photos)]
        if not self.random:
            return self.transform.center(photo)
        rng = np.random.default_rng([self.seed, i])
        w, h = photo.size
        area = rng.uniform(*self.scale) * min(w, h) ** 2
        side = max(8, min(w, h, round(math.sqrt(area))))
        left = int(rng.integers(0, w - side + 1))
        top = int(rng.integers(0, h - side + 1))
        crop = photo.crop((left, top, left + side, top + side))
        crop = crop.resize((self.transform.size,) * 2, _pil().Resampling.BILINEAR)
        rgb = np.asarray(crop)
        if self.flip and rng.random() < 0.5:
            rgb = rgb[:, ::-1]
        return self.transform.to_tensor(rgb)
