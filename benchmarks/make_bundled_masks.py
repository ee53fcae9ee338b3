"""Regenerate the mask files bundled for ``tvm-freq bench`` (MobileNetV2 1.0-224).

Profiling-only masks from the coefficient energy of real images (Fashion-MNIST test
images resized to 224x224, as in ``bench_freq.py``), with the energy level searched so that
the default build (MAC rule) removes about 20% and 40% of whole-network MACs. Writes
``tvm_freq/assets/masks/mobilenetv2-224-cut{20,40}.json``::

    python benchmarks/make_bundled_masks.py --data-dir /path/to/data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_freq import MODEL, calibration_batches  # noqa: E402

from tvm_freq.calibrate import calibrate_energies, masks_for_reduction  # noqa: E402
from tvm_freq.frontend import import_model  # noqa: E402
from tvm_freq.masks import save_masks  # noqa: E402
from tvm_freq.models import BUNDLED_CUTS, bundled_masks, bundled_onnx  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="default: $TVM_FREQ_DATA")
    ap.add_argument("--calib-images", type=int, default=16)
    args = ap.parse_args(argv)
    mod = import_model(str(bundled_onnx(MODEL))).mod
    energies = calibrate_energies(mod, calibration_batches(args.data_dir, args.calib_images))
    for cut in BUNDLED_CUTS:
        t = masks_for_reduction(mod, energies, cut / 100, model_name=MODEL)
        path = save_masks(bundled_masks(MODEL, cut, must_exist=False), t.masks)
        print(f"{path}: energy {t.energy:.4f}, whole-network MACs -{t.reduction:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
