"""How long the whole course takes headless on the embedded default, notebook by notebook.

    python benchmarks/course_time.py [--only 03 ...] [--out course_time.json]

An instructor runs ``make course`` before class, so its wall time is what this measures: the
course runner itself (``internvl_course.course.runner``: papermill, the ``internvl-course`` kernel, each
notebook's own full defaults, kernel start-up included), in order, on the embedded tiny model.
It runs in a fresh ``work_dirs`` holding only the embedded model (``runner.fresh_work_dirs``), as
on a fresh clone after ``make setup``: otherwise lesson 06 would resume a finished training run
and look fast. The executed notebooks and the runner's summary stay in
``work_dirs/runs/course-time-<timestamp>/``. The goal is 5 minutes for all notebooks together on
a 2-core CPU; the script reports against it and exits 1 only if a notebook fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from report import Column, describe, environment, format_table, write_json

GOAL_SECONDS = 5 * 60

COLUMNS: list[Column] = [("notebook", "notebook", ""), ("seconds", "seconds", ".1f"), ("status", "status", "")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[],
                        help="notebook number(s) to time, e.g. --only 03 (repeatable; default: the whole course)")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args()

    from internvl_course.course import runner
    from internvl_course.paths import work_dir

    env = environment(("torch", "transformers", "lmdeploy", "papermill"))
    print(describe(env), flush=True)
    out = work_dir() / "runs" / f"course-time-{datetime.now():%Y%m%d-%H%M%S}"
    with runner.fresh_work_dirs():
        status = runner.main(only=args.only, params="full", out=str(out))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rows = [{"notebook": r["notebook"], "seconds": r["seconds"], "status": r["status"]} for r in summary["results"]]
    total = sum(row["seconds"] for row in rows)
    print(format_table(rows + [{"notebook": "total", "seconds": total, "status": "ok" if status == 0 else "failed"}],
                       COLUMNS))
    verdict = "within" if total <= GOAL_SECONDS else f"{total - GOAL_SECONDS:.0f} s over"
    print(f"total {total:.1f} s ({total / 60:.1f} min): {verdict} the goal of {GOAL_SECONDS / 60:.0f} minutes")
    if args.out:
        write_json(args.out, {"environment": env, "goal_seconds": GOAL_SECONDS, "total_seconds": total,
                              "rows": rows, "run": str(out)})
    return status


if __name__ == "__main__":
    sys.exit(main())
