"""The training batches of a run: order, augmentation, and this process's share.

Batch order and augmentation are pure functions of ``(seed, phase, epoch, step)``, so a
resumed run repeats exactly what an uninterrupted one would have done, whatever the
number of processes: every process builds the same *global* batch and trains on its
share of it (:func:`tvm_freq.train.distributed.shard_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from . import distributed

__all__ = ["seed_for", "epoch_order", "augment", "Batches"]

# Phase index of the batch order that batch-norm recalibration uses (no real phase).
_RECALIBRATION_PHASE = 10_000
# Last seed part of the augmentation of a step.
_AUGMENT_SALT = 7


def seed_for(*parts: int) -> int:
    """A 63-bit seed that mixes integers (order matters).

    Parameters
    ----------
    *parts : int
        E.g. ``(seed, phase, epoch)``.

    Returns
    -------
    int
        The seed.
    """
    h = 0x9E3779B9
    for p in parts:
        h = (h * 1_000_003 + int(p) + 1) % (2**63 - 1)
    return h


def epoch_order(seed: int, phase: int, epoch: int, n: int) -> torch.Tensor:
    """The order of the ``n`` training examples in one epoch of one phase.

    Parameters
    ----------
    seed : int
        The run's seed.
    phase, epoch : int
        Where in the run.
    n : int
        Number of examples.

    Returns
    -------
    torch.Tensor
        A permutation of ``range(n)``.
    """
    g = torch.Generator().manual_seed(seed_for(seed, phase, epoch))
    return torch.randperm(n, generator=g)


def augment(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Random horizontal flips and +-2 pixel shifts, drawn from a generator of its own.

    The global RNG is not touched, so resuming needs no RNG replay.

    Parameters
    ----------
    x : torch.Tensor
        Images ``[N, C, H, W]``; shifted-in pixels get the batch's minimum.
    seed : int
        Seed of the draws.

    Returns
    -------
    torch.Tensor
        Augmented images.
    """
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    h, w = x.shape[2:]
    padded = F.pad(x, (2, 2, 2, 2), value=float(x.amin()))
    out = torch.empty_like(x)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            if sel.any():
                out[sel] = padded[sel, :, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    return out


class Batches:
    """The batches of a training set for one run.

    Parameters
    ----------
    dataset : torch.utils.data.TensorDataset
        ``(images, labels)``.
    batch_size : int
        Global batch size (all processes together).
    seed : int
        The run's seed.
    augment : bool
        Augment training batches (:func:`augment`).
    """

    def __init__(self, dataset: TensorDataset, batch_size: int, seed: int, augment: bool):
        self.x, self.y = dataset.tensors
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.steps_per_epoch = math.ceil(len(self.y) / batch_size)
        self._order: tuple[tuple[int, int], torch.Tensor] | None = None

    def _epoch(self, phase: int, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != (phase, epoch):
            self._order = ((phase, epoch), epoch_order(self.seed, phase, epoch, len(self.y)))
        return self._order[1]

    def global_batch(self, phase: int, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole batch of one step, augmented (every process builds the same).

        Parameters
        ----------
        phase, epoch, step : int
            Where in the run.

        Returns
        -------
        tuple of torch.Tensor
            Images and labels.
        """
        sel = self._epoch(phase, epoch)[step * self.batch_size : (step + 1) * self.batch_size]
        x, y = self.x[sel], self.y[sel]
        if self.augment:
            x = augment(x, seed_for(self.seed, phase, epoch, step, _AUGMENT_SALT))
        return x, y

    def local_batch(
        self, phase: int, epoch: int, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """This process's share of a step's batch (all of it in a single process).

        Parameters
        ----------
        phase, epoch, step : int
            The step, as for :meth:`global_batch`.

        Returns
        -------
        tuple
            Images and labels of the share, and the size of the global batch.
        """
        x, y = self.global_batch(phase, epoch, step)
        xs, ys = distributed.shard_batch(x, y)
        return xs, ys, len(y)

    def recalibration(self, count: int) -> Iterator[torch.Tensor]:
        """Images of up to ``count`` batches in a fixed order of their own, not augmented.

        Parameters
        ----------
        count : int
            Number of batches.

        Yields
        ------
        torch.Tensor
            Images of one batch (the whole batch: every process sees the same).
        """
        order = epoch_order(self.seed, _RECALIBRATION_PHASE, 0, len(self.y))
        for i in range(count):
            sel = order[i * self.batch_size : (i + 1) * self.batch_size]
            if len(sel) == 0:
                return
            yield self.x[sel]
