"""The package imports its compiler lazily: PyTorch-only modules work without TVM loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tvm_freq


def test_torch_only_modules_do_not_load_tvm():
    code = (
        "import sys\n"
        "import tvm_freq.specnet, tvm_freq.memory, tvm_freq.train, tvm_freq.data\n"
        "assert 'tvm' not in sys.modules, sorted(m for m in sys.modules if m.startswith('tvm.'))\n"
        "import tvm_freq\n"
        "tvm_freq.build\n"  # first use of a compiler name loads TVM
        "assert 'tvm' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_resolve_and_unknown_names_raise():
    from tvm_freq import Tuning, build  # noqa: F401  (from-import goes through __getattr__)

    assert set(tvm_freq.__all__) <= set(dir(tvm_freq))
    for name in tvm_freq.__all__:
        assert getattr(tvm_freq, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tvm_freq.nope  # noqa: B018
