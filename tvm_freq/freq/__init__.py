"""PyTorch front-end: block DCT, frequency-domain pointwise convs, FCMask, MAC accounting.

A 1x1 conv commutes with a per-channel block DCT (paper section 3.1), so
``conv(x) == IDCT(conv(DCT(x)))``. :class:`FreqPointwiseConv2d` computes a wrapped
conv that way and multiplies the coefficients by per-channel masks in between:

* learned masks (paper section 3.3): one ``FCMask`` value per channel, turned into
  ``coefmask_n = clamp((FCMask - n / num_coefs) * num_coefs, 0, 1)``;
* hard masks: the learned masks rounded to 0/1, which always keep a prefix of the
  zigzag coefficients of every channel (a frequency band);
* fixed masks: arbitrary 0/1 ``[C, k*k]`` arrays, used by the profiling strategies
  in :mod:`tvm_freq.freq.prune` (channel-coefficient masks need not be prefixes).

Conventions follow :mod:`tvm_freq.dct`: zigzag order, orthonormal basis, zero padding
at the bottom and right. The conv's bias is added in the spatial domain after the
IDCT and crop, never masked, so an unpruned wrapper equals the conv exactly.

Modules
-------
``transforms``
    :func:`block_dct` / :func:`block_idct`, :class:`BlockDCT`, :class:`BlockIDCT`.
``mask_math``
    :func:`coef_masks`, :func:`hard_counts`, :func:`prefix_masks`, :func:`is_prefix_mask`.
``sites``
    Eligibility (:func:`pointwise_skip_reason`) and :func:`pointwise_sites` (tracing).
``layer``
    :class:`FreqPointwiseConv2d`.
``mask_modes``
    :class:`MaskMode` and the rules of each mode (soft, hard, fixed masks).
``apply``
    :class:`FreqConfig`, :func:`apply_`, :func:`squash`, :func:`unwrap_`,
    :func:`freq_layers`, :func:`kept_counts`, reports.
``policies``
    Block-size policies.
``penalty``
    :func:`fcmask_penalty`.
``accounting``
    :func:`model_macs`, :func:`refresh_macs`, :class:`ModelMacs`, :class:`PointwiseMacs`.
``prune``
    Profiling-based pruning strategies (paper section 3.2).
``export``
    Mask files from and into models, :func:`~tvm_freq.freq.export.export`.
"""

from __future__ import annotations

from .accounting import ModelMacs, PointwiseMacs, model_macs, refresh_macs
from .apply import (
    ApplyReport,
    FreqConfig,
    KeptCounts,
    SkippedLayer,
    WrappedLayer,
    apply_,
    fcmask_parameters,
    freq_layers,
    kept_counts,
    squash,
    unwrap_,
)
from .layer import FreqPointwiseConv2d, Where
from .mask_math import coef_masks, hard_counts, is_prefix_mask, prefix_masks
from .mask_modes import MaskMode
from .penalty import fcmask_penalty
from .policies import mobilenetv2_224_block_size, overhead_block_size, split_block_size
from .sites import PointwiseSite, pointwise_sites, pointwise_skip_reason
from .transforms import BlockDCT, BlockIDCT, block_dct, block_idct

__all__ = [
    "ApplyReport",
    "BlockDCT",
    "BlockIDCT",
    "FreqConfig",
    "FreqPointwiseConv2d",
    "KeptCounts",
    "MaskMode",
    "ModelMacs",
    "PointwiseMacs",
    "PointwiseSite",
    "SkippedLayer",
    "Where",
    "WrappedLayer",
    "apply_",
    "block_dct",
    "block_idct",
    "coef_masks",
    "fcmask_parameters",
    "fcmask_penalty",
    "freq_layers",
    "hard_counts",
    "is_prefix_mask",
    "kept_counts",
    "mobilenetv2_224_block_size",
    "model_macs",
    "overhead_block_size",
    "pointwise_sites",
    "pointwise_skip_reason",
    "prefix_masks",
    "refresh_macs",
    "split_block_size",
    "squash",
    "unwrap_",
]
