"""Tune the bundled zoo models and append the records to ``schedules/records``.

These are the records shipped with tvm_freq. Tuning appends to the JSON database as
it goes, so an interrupted run keeps what it measured; rerun to tune the tasks that
still have no record. Run on an idle machine with a single-thread target:

    TVM_NUM_THREADS=1 python benchmarks/tune_records.py mobilenetv2-224 --trials 768 \
        --max-trials-per-task 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tvm_freq.models import MODEL_NAMES, bundled_onnx
from tvm_freq.pipeline import Tuning, build

RECORDS = Path(__file__).resolve().parents[1] / "schedules" / "records"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", choices=MODEL_NAMES)
    p.add_argument("--trials", type=int, default=768)
    p.add_argument("--max-trials-per-task", type=int, default=16)
    p.add_argument("--masks", default=None, help="also tune the frequency kernels")
    p.add_argument("--records", default=str(RECORDS))
    p.add_argument("--retune", action="store_true", help="add trials to tasks with records")
    args = p.parse_args()
    for name in args.models:
        start = time.perf_counter()
        model = build(
            str(bundled_onnx(name)),
            masks=args.masks,
            tuning=Tuning(
                trials=args.trials,
                retune=args.retune,
                max_trials_per_task=args.max_trials_per_task,
                records=args.records,
                use_shipped=False,
            ),
        )
        print(f"{name}: {time.perf_counter() - start:.0f} s")
        print(model.report)
        print(model.benchmark())


if __name__ == "__main__":
    main()
