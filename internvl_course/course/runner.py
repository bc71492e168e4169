"""``internvl-course run`` (``make course``): run the course notebooks headless, in order.

Each notebook runs with papermill in the ``internvl-course`` kernel. The executed notebooks,
their figures and a summary page (status, duration and published numbers per notebook) go to
``work_dirs/runs/<timestamp>/``. A failure names the notebook and the cell, and the exit status
is non-zero, so an instructor can trust one command before class.
"""

from __future__ import annotations

import ast
import base64
import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from internvl_course.fileio import atomic_write_bytes, atomic_write_text
from internvl_course.course.plan import COURSE, SMOKE_PARAMS, Notebook
from internvl_course.course.notebook import PARAMS_ENV
from internvl_course.paths import KERNEL_NAME, environment, tiny_model_dir, work_dir
from internvl_course.course.publish import read_published


@dataclass
class NotebookResult:
    notebook: str
    status: str  # "ok" or "failed"
    seconds: float
    published: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    error: str = ""


def notebook_parameters(path: Path) -> list[str]:
    """The names a notebook's ``parameters`` cell assigns, in order: the only names a parameters
    file may set for it (papermill injects whatever it is given, with a mere warning)."""
    for cell in json.loads(path.read_text(encoding="utf-8")).get("cells", []):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            names = [target.id for node in ast.parse(source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                     for assigned in (node.targets if isinstance(node, ast.Assign) else [node.target])
                     for target in ast.walk(assigned) if isinstance(target, ast.Name)]
            return list(dict.fromkeys(names))
    return []


def check_params(parameters: dict[str, dict[str, Any]], source_dir: Path | None = None) -> None:
    """Refuse, before any notebook runs, a notebook number the course lacks or a name that is not
    one of that notebook's parameters, listing the ones it has: a misspelt name would otherwise run
    the default and report success."""
    course = {nb.number: nb for nb in COURSE}
    unknown = sorted(set(parameters) - set(course))
    if unknown:
        raise SystemExit(f"parameters for notebook {', '.join(unknown)}: no such notebook. The course has "
                         + ", ".join(course) + ".")
    problems = []
    for number, values in parameters.items():
        path = course[number].path(source_dir)
        if not path.is_file():
            continue  # the run itself reports a notebook that is not there
        known = notebook_parameters(path)
        wrong = [name for name in values if name not in known]
        if wrong:
            problems.append(f"{', '.join(wrong)} not defined in notebook {number} ({path.name}), whose parameters "
                            f"are {', '.join(known)}")
    if problems:
        raise SystemExit("unknown parameter name(s); nothing ran. Use the names of each notebook's parameters cell:\n  "
                         + "\n  ".join(problems))


def load_params(params: str) -> dict[str, dict[str, Any]]:
    """``smoke``, ``full`` or a YAML/JSON file mapping notebook numbers to parameters, checked
    against the notebooks' own parameters (``check_params``)."""
    if params == "smoke":
        check_params(SMOKE_PARAMS)
        return SMOKE_PARAMS
    if params == "full":
        return {}
    path = Path(params)
    if not path.is_file():
        raise SystemExit(f"--params {params!r}: not 'smoke', not 'full', and no such file. "
                         "Give smoke, full, or a YAML/JSON file like {\"03\": {\"max_num\": 6}}.")
    import yaml

    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
        raise SystemExit(f"{path}: expected a mapping of notebook numbers to parameter mappings, "
                         "for example {\"03\": {\"max_num\": 6}}.")
    parameters = {str(k).zfill(2): v for k, v in loaded.items()}
    try:
        check_params(parameters)
    except SystemExit as refused:
        raise SystemExit(f"--params {params}: {refused.code}") from None
    return parameters


def select(only: list[str]) -> list[Notebook]:
    """The course's notebooks numbered in ``only`` (all of them when it is empty), in run order."""
    if not only:
        return list(COURSE)
    wanted = {o.zfill(2) for o in only}
    unknown = sorted(wanted - {nb.number for nb in COURSE})
    if unknown:
        raise SystemExit(f"--only {', '.join(unknown)}: no such notebook. The course has "
                         + ", ".join(nb.number for nb in COURSE) + ".")
    return [nb for nb in COURSE if nb.number in wanted]


@contextmanager
def fresh_work_dirs() -> Iterator[Path]:
    """Run the course as on a fresh clone after ``make setup``: an empty ``work_dirs`` holding
    only a copy of the embedded model, removed afterwards.

    Lesson 06 resumes a finished run and 07 reads it back, so timings and committed outputs
    made in the usual ``work_dirs`` would depend on what earlier runs left there; a student's
    own checkpoints are never touched either.
    """
    model = tiny_model_dir()
    if not (model / "config.json").is_file():
        raise SystemExit(f"no embedded model at {model}: run `make setup` (or `internvl-course build`) first")
    with tempfile.TemporaryDirectory(prefix=".fresh-", dir=work_dir()) as folder:
        root = Path(folder).resolve()
        shutil.copytree(model, root / "models" / model.name)
        with environment(INTERNVL_COURSE_WORK_DIRS=str(root)):
            yield root


def _save_figures(executed: Any, nb: Notebook, figures_dir: Path) -> list[str]:
    saved = []
    for index, cell in enumerate(executed.cells):
        for k, output in enumerate(cell.get("outputs", [])):
            png = output.get("data", {}).get("image/png")
            if png:
                path = figures_dir / f"{nb.number}_cell{index:02d}_{k}.png"
                atomic_write_bytes(path, base64.b64decode(png))
                saved.append(str(path.relative_to(figures_dir.parent)))
    return saved


def run_notebook(nb: Notebook, parameters: dict[str, Any], out_dir: Path,
                 source_dir: Path | None = None) -> NotebookResult:
    """Execute one notebook into ``out_dir``; a failure is reported, never raised."""
    import nbformat
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / nb.filename
    start = time.perf_counter()
    error = ""
    try:
        source = nb.path(source_dir)
        with environment(**{PARAMS_ENV: None}):  # these parameters, not a variable left in the shell
            pm.execute_notebook(str(source), str(output), parameters=parameters, kernel_name=KERNEL_NAME,
                                cwd=str(source.parent), progress_bar=False)
    except pm.PapermillExecutionError as err:
        error = f"{nb.filename} failed in cell {err.cell_index} (execution count {err.exec_count}): {err.ename}: {err.evalue}"
    except Exception as err:  # the kernel died, a missing kernel, a bad notebook file ...
        error = f"{nb.filename} could not run: {type(err).__name__}: {err}"
    seconds = time.perf_counter() - start
    if not output.exists():
        return NotebookResult(nb.filename, "failed", seconds, error=error)
    executed = nbformat.read(output, as_version=4)
    return NotebookResult(nb.filename, "failed" if error else "ok", seconds, read_published(executed),
                          _save_figures(executed, nb, out_dir / "figures"), error)


def _summary_markdown(results: list[NotebookResult], params: str) -> str:
    lines = [f"# Course run {datetime.now():%Y-%m-%d %H:%M:%S}", "", f"Parameters: `{params}`", "",
             "| notebook | status | seconds | published |", "| --- | --- | --- | --- |"]
    for r in results:
        pub = ", ".join(f"{k}={v}" for k, v in r.published.items())
        lines.append(f"| {r.notebook} | {r.status} | {r.seconds:.1f} | {pub} |")
    lines.append(f"| total | | {sum(r.seconds for r in results):.1f} | |")
    for r in results:
        if r.error:
            lines += ["", f"**{r.notebook}**: {r.error}"]
        if r.figures:
            lines += ["", f"## {r.notebook}", ""] + [f"![{f}]({f})" for f in r.figures]
    return "\n".join(lines) + "\n"


def main(only: list[str], params: str = "full", out: str | None = None) -> int:
    parameters = load_params(params)
    chosen = select(only)
    out_dir = Path(out) if out else work_dir() / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, nb in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {nb.filename} ...", flush=True)
        result = run_notebook(nb, parameters.get(nb.number, {}), out_dir)
        print(f"      {result.status} in {result.seconds:.1f} s" + (f": {result.error}" if result.error else ""),
              flush=True)
        results.append(result)
    atomic_write_text(out_dir / "summary.json",
                      json.dumps({"params": params, "results": [asdict(r) for r in results]}, indent=2,
                                 ensure_ascii=False))
    atomic_write_text(out_dir / "summary.md", _summary_markdown(results, params))
    failed = [r for r in results if r.status != "ok"]
    total = sum(r.seconds for r in results)
    print(f"{len(results) - len(failed)} of {len(results)} notebook(s) ran in {total:.1f} s; "
          f"summary: {out_dir / 'summary.md'}")
    for r in failed:
        print(f"FAILED {r.error}")
    return 1 if failed else 0
