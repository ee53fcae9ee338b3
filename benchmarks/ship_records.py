"""Ship a tuning run's best records: the top ``k`` per workload into ``schedules/records``.

Tune into a scratch store first (it resumes from its records when interrupted), then
ship, for example:

    TVM_NUM_THREADS=1 python benchmarks/tune_records.py mobilenetv2-224 --trials 2112 \\
        --max-trials-per-task 64 --records /tmp/records
    python benchmarks/ship_records.py /tmp/records --top 4

To add trials on top of the shipped records (for example after a change of a default
schedule, which is one candidate of its design space), copy them into a scratch store,
retune there and ship with a ``--note`` saying so: the trial counts of the line are the
scratch store's, the previously shipped best records included.

The shipped store of each target is replaced (its ``cost_model.json`` is kept), and
``schedules/records/README.md`` gets a line per target saying how many trials each of
its workloads got.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from tvm.s_tir import meta_schedule as ms

RECORDS = Path(__file__).resolve().parents[1] / "schedules" / "records"
DB_FILES = ("database_workload.json", "database_tuning_record.json")


def trials_per_workload(directory: Path) -> Counter:
    """Records (measured trials) per workload index of a JSON database."""
    lines = (directory / DB_FILES[1]).read_text().splitlines()
    return Counter(json.loads(line)[0] for line in lines if line.strip())


def ship(source: Path, dest: Path, top: int) -> tuple[int, Counter, int]:
    """Write the ``top`` best records per workload of ``source`` into ``dest``."""
    src = ms.database.JSONDatabase(*(str(source / f) for f in DB_FILES), allow_missing=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = ms.database.JSONDatabase(*(str(Path(tmp) / f) for f in DB_FILES))
        kept = 0
        workloads = {r.workload for r in src.get_all_tuning_records()}
        for wl in workloads:
            new_wl = out.commit_workload(wl.mod)
            for rec in src.get_top_k(wl, top):
                out.commit_tuning_record(ms.database.TuningRecord(
                    rec.trace, new_wl, rec.run_secs, rec.target, rec.args_info))  # fmt: skip
                kept += 1
        dest.mkdir(parents=True, exist_ok=True)
        for f in DB_FILES:
            shutil.copyfile(Path(tmp) / f, dest / f)
    counts = Counter(trials_per_workload(source).values())
    return len(workloads), counts, kept


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", help="records root of the tuning run (holds <target key>/)")
    p.add_argument("--top", type=int, default=4, help="records kept per workload")
    p.add_argument("--dest", default=str(RECORDS))
    p.add_argument("--note", default="",
                   help="how the source store came about, appended to the README line "
                        "(e.g. that it started from the previously shipped records)")  # fmt: skip
    args = p.parse_args()
    readme = Path(args.dest) / "README.md"
    lines = readme.read_text().splitlines() if readme.is_file() else [
        "# Shipped tuning records", "",
        "Written by `benchmarks/ship_records.py`; one line per target key.", "",
    ]  # fmt: skip
    for directory in sorted(Path(args.source).iterdir()):
        if not (directory / DB_FILES[1]).is_file():
            continue
        n, counts, kept = ship(directory, Path(args.dest) / directory.name, args.top)
        spread = ", ".join(f"{k} kernels {t} trials" for t, k in sorted(counts.items())[::-1])
        line = (f"- `{directory.name}`: {n} kernels tuned ({spread}; a dense design space of "
                f"n points gets at most 4n trials); the best {args.top} records of each "
                f"are shipped ({kept} in all).") + (f" {args.note}" if args.note else "")
        lines = [ln for ln in lines if not ln.startswith(f"- `{directory.name}`")] + [line]
        print(line)
    readme.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
