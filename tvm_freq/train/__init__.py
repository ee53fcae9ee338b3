"""Training loops: plain training, learned FCMask band pruning, refinement, checkpoints.

:func:`run_training` runs a list of *phases* built from a :class:`TrainConfig`:

* ``train``: plain training of the dense model (SGD, cosine learning rate);
* ``masks``: learn the FCMasks with the weights frozen (paper section 3.3; appendix A.1),
  loss ``cross_entropy + lambda * fcmask_penalty``; with a target, ``lambda`` is
  steered so that the pointwise MAC reduction (transform overhead included) reaches
  it on schedule, and learning stops as soon as it does (the paper: "once we achieve
  the desired pruning levels, we freeze the pruning and refine the weights");
* ``weights``: train the weights with the soft masks frozen (the "alternate" schedule
  interleaves ``masks`` and ``weights`` epochs);
* ``refine``: round the masks to 0/1 (squash), re-estimate the BN statistics, and
  train the weights;
* ``bn``: fine-tune only the batch-norm layers at the end.

Checkpoints (model, optimizer, phase, epoch, step, RNG states, results so far) are
written atomically every ``checkpoint_every`` steps and at every epoch end; a rerun
with the same configuration resumes from the last one. Batch order and augmentation
are pure functions of ``(seed, phase, epoch, step)``, so a resumed run repeats
exactly what an uninterrupted one would have done.

Under ``torchrun`` the run is data-parallel (DistributedDataParallel, gloo on the
CPU): each process trains on its share of every global batch, rank 0 writes the
checkpoints and files, and every rank resumes from what rank 0 reads
(docs/training.md).

Modules: ``config`` (:class:`TrainConfig`, flags, :func:`build_phases`), ``loop``
(:func:`run_training`, :func:`evaluate`), ``state`` (:class:`~.state.RunState`, where
a run stands), ``batches`` (order, augmentation, shares), ``pruning`` (wrapping,
rounding, MACs, BN recalibration), ``optim`` (what a phase trains, learning rates,
lambda), ``checkpoint`` (atomic save, RNG states, compatibility check),
``distributed`` (torchrun helpers, also used by ``distill``).
"""

from __future__ import annotations

from .config import (
    SCHEDULES,
    Phase,
    TrainConfig,
    add_config_flags,
    build_phases,
    config_from_args,
)
from .loop import evaluate, run_training

__all__ = [
    "TrainConfig",
    "Phase",
    "build_phases",
    "evaluate",
    "run_training",
    "SCHEDULES",
    "add_config_flags",
    "config_from_args",
]
