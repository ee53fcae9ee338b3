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

Modules: ``config`` (:class:`TrainConfig`, flags, :func:`build_phases`), ``loop``
(:func:`run_training`, :func:`evaluate`), ``checkpoint`` (atomic save, RNG states,
compatibility check).
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
