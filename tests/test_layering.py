"""Package layering: the mask-file contract is NumPy-only and SpecNet never loads TVM."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)


def test_specnet_does_not_import_tvm():
    _run(
        "import tvm_freq.masks, tvm_freq.specnet, sys; "
        "assert 'tvm' not in sys.modules, sorted(m for m in sys.modules if m.startswith('tvm'))"
    )


def test_masks_does_not_import_torch():
    _run(
        "import tvm_freq.masks, sys; "
        "assert 'torch' not in sys.modules, 'tvm_freq.masks imported torch'; "
        "assert 'tvm_freq.freq' not in sys.modules, 'tvm_freq.masks imported tvm_freq.freq'"
    )


@pytest.mark.parametrize(
    "module", ["tvm_freq.bands", "tvm_freq.dft_matrices", "tvm_freq.macs", "tvm_freq.dct"]
)
def test_numpy_helpers_import_neither_torch_nor_tvm(module):
    _run(f"import {module}, sys; assert 'torch' not in sys.modules and 'tvm' not in sys.modules")


def test_torch_side_does_not_import_tvm():
    _run(
        "import tvm_freq.specnet, tvm_freq.freq, tvm_freq.freq.prune, tvm_freq.freq.export, "
        "tvm_freq.train, sys; assert 'tvm' not in sys.modules"
    )
