"""Package layering, compiler side: the compiler path never imports torch itself.

TVM's FFI package (``tvm_ffi``) imports torch eagerly when it is installed (a workaround
for a symbol clash, in ``tvm_ffi/__init__.py``), so on a machine with torch ``'torch'`` is
in ``sys.modules`` after any ``import tvm``. The test therefore makes torch unimportable
and checks that the compiler modules import anyway, and that no ``tvm_freq`` module was
the one asking for torch.
"""

from __future__ import annotations

import subprocess
import sys

_BLOCK_TORCH = """
import sys, traceback

asked = []

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            frames = [f.f_globals.get("__name__", "") for f, _ in traceback.walk_stack(None)]
            importer = next(n for n in frames[1:] if n and not n.startswith("importlib"))
            asked.append(importer)
            raise ImportError("torch is blocked by the layering test")
        return None

sys.meta_path.insert(0, NoTorch())
"""


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", _BLOCK_TORCH + code], check=True)


def test_compiler_path_does_not_import_torch():
    _run(
        "import tvm_freq.masks, tvm_freq.passes, tvm_freq.pipeline, tvm_freq.calibrate\n"
        "import tvm_freq.tuning, tvm_freq.profitability, tvm_freq.runtime, tvm_freq.target\n"
        "import tvm_freq.records, tvm_freq.report, tvm_freq.bench, tvm_freq.frontend\n"
        "import tvm_freq.kernels.freq_pointwise, tvm_freq.schedules.freq_pointwise\n"
        "import tvm_freq.cost_model\n"
        "assert 'torch' not in sys.modules\n"
        "ours = [m for m in asked if m.startswith('tvm_freq')]\n"
        "assert not ours, f'tvm_freq modules import torch: {ours}'\n"
    )


def test_plain_data_modules_do_not_import_tvm():
    """Decisions, options and masks are plain data: readable without TVM or torch."""
    _run(
        "import importlib.util as u, pathlib, tvm_freq\n"
        "for name in ('decisions', 'options'):\n"
        "    path = pathlib.Path(tvm_freq.__file__).parent / 'passes' / f'{name}.py'\n"
        "    spec = u.spec_from_file_location(name, path)\n"
        "    sys.modules[name] = module = u.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "assert 'tvm' not in sys.modules and 'torch' not in sys.modules\n"
        "import tvm_freq.band_plan, tvm_freq.cost_model\n"
        "assert 'tvm' not in sys.modules and 'torch' not in sys.modules\n"
    )
