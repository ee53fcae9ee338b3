"""BuildReport: JSON round trip (what an exported model's sidecar holds)."""

from __future__ import annotations

import json

import pytest

from tvm_freq.masks import LayerMask, MaskFile
from tvm_freq.passes import DecisionReason, LayerDecision
from tvm_freq.report import BuildReport


def test_report_round_trips_through_json():
    masks = MaskFile(model_name="net", num_pointwise=1, layers=(
        LayerMask(ordinal=0, name="pw", weight_shape=(4, 4, 1, 1), block=4,
                  kin=(3, 3, 2, 1), kout=(16, 8, 4, 2)),))  # fmt: skip
    layer = LayerDecision(0, "pw", 4, 4, 8, 8, block=4, dense_macs=1024, rewritten=True,
                          reason=DecisionReason.FASTER, mac_ratio=0.5, time_ratio=0.8,
                          dense_us=10.0, freq_us=8.0, kernels=["freq_fused"])  # fmt: skip
    report = BuildReport("llvm", "onnx", num_tasks=3, untuned_tasks=["a"], layers=[layer],
                         masks=masks)  # fmt: skip
    again = BuildReport.from_json(json.loads(json.dumps(report.to_json())))
    assert again == report
    assert str(again) == str(report)
    with pytest.raises(ValueError, match="unknown fields"):
        BuildReport.from_json({**report.to_json(), "extra": 1})
