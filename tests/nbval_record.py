"""pytest plugin for the nbval tier (``-p tests.nbval_record --record-executed DIR``): keep what ran.

nbval executes a notebook cell by cell in one kernel and compares the cells marked
``# NBVAL_CHECK_OUTPUT``, but keeps nothing of the run. With this plugin the notebooks run as on
a fresh clone (``runner.fresh_work_dirs``: lesson 06 trains and 07 merges there, never in the
student's own work_dirs), and DIR receives:

- each notebook as soon as its last cell is done: the committed notebook with every code cell's
  outputs as the kernel sent them in this run, numbered 1, 2, ... in run order; a cell that did
  not run (a skipped cell, or one after the kernel died) keeps no outputs and no execution count;
- ``work_dirs.txt``: every file and folder the run left in its work_dirs, relative to it;
- ``fresh_work_dirs.txt``: that work_dirs' own path, written first, so that whoever has to kill
  the run outright can still remove it.

So the tests that assert on what a lesson published, drew or wrote read this one run
(``smoke_run`` in tests/conftest.py) instead of executing every notebook a second time.

SIGTERM stops the run as Ctrl-C does (tests/conftest.py sends it to a run no test waited for):
pytest then shuts nbval's kernel down and this plugin removes the fresh work_dirs.
"""

from __future__ import annotations

import copy
import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbval.plugin import IPyNbCell

from internvl_course.course.runner import fresh_work_dirs


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-executed", metavar="DIR",
                     help="run in a fresh work_dirs and write every notebook nbval ran, with the outputs of "
                          "this run, and the list of files left in work_dirs (work_dirs.txt) into DIR")


def pytest_configure(config: pytest.Config) -> None:
    folder = config.getoption("record_executed")
    if folder:
        config.pluginmanager.register(Recorder(Path(folder)), "nbval-record")


class Recorder:
    """Collects each cell's outputs and writes a notebook when nbval moves on to the next file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.outputs: dict[int, list[Any]] = {}  # code cell number -> outputs, for the notebook running now
        self.stack = ExitStack()
        self.work = self.stack.enter_context(fresh_work_dirs())  # the kernels nbval starts inherit it
        (self.folder / "fresh_work_dirs.txt").write_text(f"{self.work}\n", encoding="utf-8")
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # raises KeyboardInterrupt

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        yield  # the cell runs (and is compared) here; its outputs are kept even when it failed
        if isinstance(item, IPyNbCell) and item.test_outputs is not None:
            self.outputs[item.cell_num] = item.test_outputs

    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        if isinstance(item, IPyNbCell) and (nextitem is None or nextitem.parent is not item.parent):
            self.write(item.parent.nb, Path(str(item.parent.path)).name)
            self.outputs = {}

    def write(self, source: nbformat.NotebookNode, name: str) -> None:
        executed = copy.deepcopy(source)
        code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
        count = 0
        for number, cell in enumerate(code_cells):
            ran = self.outputs.get(number)
            if ran is None:
                cell.outputs, cell.execution_count = [], None
                continue
            count += 1
            cell.outputs, cell.execution_count = [nbformat.from_dict(dict(o)) for o in ran], count
            for output in cell.outputs:
                if output.output_type == "execute_result":
                    output.execution_count = count
        nbformat.write(executed, self.folder / name)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        left = sorted(str(path.relative_to(self.work)) for path in self.work.rglob("*"))
        (self.folder / "work_dirs.txt").write_text("".join(f"{path}\n" for path in left), encoding="utf-8")
        self.stack.close()
