"""``internvl-course outputs`` (``make outputs``): the outputs committed in ``notebooks/``.

Students should see results before they run anything, so each committed notebook carries the
outputs of one sequential CPU run of the course with its full defaults on the embedded model,
run as on a fresh clone (``runner.fresh_work_dirs``). Before writing a notebook back, only its
outputs and execution counts are taken from the run: the committed source and metadata stay as
they are, so papermill's metadata, timings and any injected-parameters cell never reach git.
Widget views (they need widget state, which is machine noise) are dropped, and paths of this
machine become relative (``work_dirs/...``, ``data/...``), ``~`` or ``<tmp>``.

The same command also inserts, idempotently, the cell after each notebook's ``parameters`` cell
that calls ``notebook.apply_params`` (``--cells-only`` does only that), so a regenerated notebook
gets it back with one command. ``check_outputs`` lists what is wrong with a committed notebook;
the tests use it.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from internvl_course.fileio import atomic_write_text
from internvl_course.course.notebook import PARAMS_ENV
from internvl_course.paths import repo_root, work_dir

#: The id of the inserted cell: fixed, so that re-inserting it changes nothing in git.
PARAMS_CELL_ID = "apply-params"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"  # papermill's cell of injected values
#: Paths that are never the same on two machines, wherever they stand in an output.
_MACHINE_PATH = r"(?<![\w.~-])/(?:root|home|tmp|work|Users)/"


def params_cell_source(number: str) -> str:
    """The inserted cell's text; it names its notebook, since a kernel cannot know which one it runs."""
    return (f"# {PARAMS_ENV}=smoke (or a YAML/JSON file of values) runs this notebook with other values,\n"
            "# for example small ones under nbval; unset, as when you run it, this changes nothing.\n"
            "from internvl_course.course.notebook import apply_params\n\n"
            f'apply_params("{number}", globals())')


def _is_parameters(cell: Any) -> bool:
    return PARAMETERS_TAG in cell.metadata.get("tags", [])


def ensure_params_cell(nb: Any, number: str) -> bool:
    """Put the ``apply_params`` cell right after the ``parameters`` cell; False if it already is."""
    import nbformat

    others = [c for c in nb.cells if c.get("id") != PARAMS_CELL_ID]
    at = next(i for i, c in enumerate(others) if _is_parameters(c)) + 1
    current = nb.cells[at] if at < len(nb.cells) else None
    if (len(others) == len(nb.cells) - 1 and current is not None and current.get("id") == PARAMS_CELL_ID
            and current.source == params_cell_source(number)):
        return False
    cell = nbformat.v4.new_code_cell(params_cell_source(number))
    cell.id = PARAMS_CELL_ID
    nb.cells = others[:at] + [cell] + others[at:]
    return True


def _write(nb: Any, path: Path) -> None:
    """As ``nbformat.write`` lays a notebook out, atomically: a crash never leaves half a lesson."""
    import nbformat

    text = nbformat.writes(nb)
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")


def insert_params_cell(path: Path, number: str) -> bool:
    """``ensure_params_cell`` on a notebook file; it is rewritten only if the cell was missing."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = ensure_params_cell(nb, number)
    if changed:
        _write(nb, path)
    return changed


def _spelled(path: Path) -> str:
    """A regex for ``path`` as written and as resolved (they differ through a symbolic link)."""
    forms = sorted({str(path), str(path.resolve())}, key=len, reverse=True)
    return r"(?<![\w.~-])(?:" + "|".join(re.escape(f) for f in forms) + ")"


def path_rules(fresh: Path | None = None) -> list[tuple[re.Pattern[str], str]]:
    """This machine's paths, most specific first, and what a committed notebook shows instead."""
    end = r"(?![\w.-])"
    rules = []
    if fresh is not None:
        rules.append((re.compile(_spelled(fresh) + end), "work_dirs"))
    root = _spelled(repo_root())
    rules += [(re.compile(root + "/"), ""), (re.compile(root + end), ".")]
    home = Path.home()
    if len(home.parts) > 1:
        rules.append((re.compile(_spelled(home) + r"(?=/|(?![\w.-]))"), "~"))
    rules.append((re.compile(_spelled(Path(tempfile.gettempdir())) + r"/[^/\s'\"]+"), "<tmp>"))
    return rules


def _map_strings(value: Any, fix: Callable[[str], str]) -> Any:
    """``value`` (an output, or part of one) with ``fix`` applied to every string but picture data."""
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, list):
        return [_map_strings(v, fix) for v in value]
    if isinstance(value, dict):
        return type(value)({k: v if k.startswith("image/") else _map_strings(v, fix) for k, v in value.items()})
    return value


def sanitise(executed: Any, source: Any, rules: list[tuple[re.Pattern[str], str]]) -> Any:
    """``source`` with the outputs and execution counts of ``executed`` (matched by cell id),
    widget views dropped and ``rules`` applied to every text output.

    Execution counts are renumbered by rank, 1..n, closing the gap that papermill's
    injected-parameters cell (not in ``source``) leaves; their order is the kernel's, so a
    notebook not run top to bottom still shows it.
    """
    import copy

    def fix(text: str) -> str:
        for pattern, replacement in rules:
            text = pattern.sub(replacement, text)
        return text

    ran = {cell.get("id"): cell for cell in executed.cells}
    clean = copy.deepcopy(source)
    for cell in clean.cells:
        if cell.cell_type != "code":
            continue
        if cell.get("id") not in ran:
            raise ValueError(f"cell {cell.get('id')} of the notebook is not in the executed copy: "
                             "the notebook changed while it ran")
        done = ran[cell.id]
        outputs = []
        for output in done.outputs:
            if WIDGET_VIEW in output.get("data", {}):
                continue  # a tqdm bar in a kernel: no state to show it, and its text is the bar at 0 %
            outputs.append(_map_strings(copy.deepcopy(output), fix))
        cell.outputs, cell.execution_count = outputs, done.execution_count
    code = [cell for cell in clean.cells if cell.cell_type == "code" and cell.execution_count is not None]
    rank = {count: i for i, count in enumerate(sorted(cell.execution_count for cell in code), 1)}
    for cell in code:
        cell.execution_count = rank[cell.execution_count]
        for output in cell.outputs:
            if "execution_count" in output:
                output["execution_count"] = cell.execution_count
    return clean


def problems(nb: Any) -> list[str]:
    """Why ``nb`` is not a notebook run once top to bottom, cleaned for committing (empty: it is)."""
    found = []
    if "widgets" in nb.metadata:
        found.append("notebook metadata holds widget state (metadata.widgets)")
    if "papermill" in nb.metadata:
        found.append("notebook metadata holds papermill's run record (metadata.papermill)")
    tags = [tag for cell in nb.cells for tag in cell.metadata.get("tags", [])]
    if tags.count(PARAMETERS_TAG) != 1:
        found.append(f"{tags.count(PARAMETERS_TAG)} cells tagged '{PARAMETERS_TAG}', not one")
    if INJECTED_TAG in tags:
        found.append(f"papermill's '{INJECTED_TAG}' cell is still there")
    machine = [p for p, _ in path_rules()] + [re.compile(_MACHINE_PATH)]
    counts = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"cell {index}"
        if {"papermill", "execution"} & set(cell.metadata):
            found.append(f"{where}: execution timing metadata")
        if cell.source.strip():
            if cell.execution_count is None:
                found.append(f"{where}: code cell without an execution count (not run)")
            else:
                counts.append(cell.execution_count)
        for output in cell.outputs:
            if output.output_type == "error":
                found.append(f"{where}: an error output ({output.get('ename')}: {output.get('evalue')})")
            if WIDGET_VIEW in output.get("data", {}):
                found.append(f"{where}: a widget view (its state is not committed)")
            texts: list[str] = []
            _map_strings({k: v for k, v in output.items() if k != "traceback"}, lambda t: texts.append(t) or t)
            hit = next((m for text in texts for p in machine if (m := p.search(text))), None)
            if hit:
                found.append(f"{where}: an absolute path ...{hit.string[hit.start():hit.start() + 60]!r}")
    if counts != list(range(1, len(counts) + 1)):
        found.append(f"execution counts {counts} are not 1..{len(counts)}: not one run from top to bottom")
    return found


def check_outputs(path: Path) -> list[str]:
    """``problems`` of a notebook file, each naming the file."""
    import nbformat

    path = Path(path)
    return [f"{path.name}: {p}" for p in problems(nbformat.read(path, as_version=4))]


def main(only: list[str], cells_only: bool = False) -> int:
    """Insert the ``apply_params`` cells, run the chosen notebooks (default: all) with their full
    defaults in a fresh ``work_dirs``, and write each one that ran cleanly back into ``notebooks/``."""
    import nbformat

    from internvl_course.course.runner import fresh_work_dirs, main as run_main, select

    chosen = select(only)
    for nb in chosen:
        if insert_params_cell(nb.path(), nb.number):
            print(f"{nb.filename}: inserted the apply_params cell after the parameters cell")
    if cells_only:
        return 0
    out = work_dir() / "runs" / f"outputs-{datetime.now():%Y%m%d-%H%M%S}"
    with fresh_work_dirs() as fresh:
        status = run_main(only=[nb.number for nb in chosen], params="full", out=str(out))
        rules = path_rules(fresh)
        ran = {r["notebook"]: r["status"] for r in json.loads((out / "summary.json").read_text())["results"]}
        for nb in chosen:
            if ran.get(nb.filename) != "ok":
                print(f"{nb.filename}: not written (it did not run cleanly; see {out / 'summary.md'})")
                continue
            clean = sanitise(nbformat.read(out / nb.filename, as_version=4),
                             nbformat.read(nb.path(), as_version=4), rules)
            found = problems(clean)
            if found:
                print(f"{nb.filename}: not written:\n  " + "\n  ".join(found))
                status = 1
                continue
            _write(clean, nb.path())
            print(f"{nb.filename}: outputs written")
    return status
