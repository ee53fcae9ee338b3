"""tvm_freq's Relax passes (one pass per module), usable in any Relax pipeline.

``decisions`` (what the pass decided per layer) and ``options`` (its options) are plain
data; ``frequency_band_pointwise`` is the pass, ``scalar_clip`` the import's clean-up of
ONNX ``Clip``.
"""

from .decisions import DecisionReason, LayerDecision, format_layer_table
from .frequency_band_pointwise import FrequencyBandPointwise, eligible_convs
from .options import FreqOptions
from .scalar_clip import ScalarClipToClip

__all__ = [
    "DecisionReason", "FreqOptions", "FrequencyBandPointwise", "LayerDecision",
    "ScalarClipToClip", "eligible_convs", "format_layer_table",
]  # fmt: skip
