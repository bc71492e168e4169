"""``internvl-course run``: parameters, selection, summaries, and failures that name notebook and cell."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat")
from internvl_course.course import plan, runner  # noqa: E402

pytestmark = pytest.mark.notebooks


def test_smoke_and_full_params():
    assert runner.load_params("smoke") is plan.SMOKE_PARAMS
    assert runner.load_params("full") == {}


def test_params_file(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("3:\n  max_num: 6\n")
    assert runner.load_params(str(good)) == {"03": {"max_num": 6}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(SystemExit, match="bad.yaml: expected a mapping"):
        runner.load_params(str(bad))
    with pytest.raises(SystemExit, match="no such file"):
        runner.load_params(str(tmp_path / "missing.yaml"))


def test_only_rejects_unknown_numbers():
    with pytest.raises(SystemExit, match="--only 42: no such notebook"):
        runner.select(["42"])


def test_only_accepts_short_numbers():
    assert [nb.number for nb in runner.select(["0"])] == ["00"]


def test_no_only_runs_the_whole_course_in_order():
    assert runner.select([]) == list(plan.COURSE)


def test_a_failing_notebook_is_named_with_its_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("text"),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    nb.metadata["kernelspec"] = {"name": "internvl-course", "display_name": "x", "language": "python"}
    source = tmp_path / "src"
    source.mkdir()
    nbformat.write(nb, source / plan.COURSE[0].filename)
    result = runner.run_notebook(plan.COURSE[0], {}, tmp_path / "out", source_dir=source)
    assert result.status == "failed"
    assert result.error.startswith(f"{plan.COURSE[0].filename} failed in cell 2 ")
    assert "ValueError: broken on purpose" in result.error
    assert (tmp_path / "out" / plan.COURSE[0].filename).exists()  # kept for reading


def test_cli_runs_a_notebook_with_smoke_values_and_writes_a_summary(tmp_path):
    """`internvl-course run --only 00 --params smoke` on a course root whose 00 is a small notebook
    (the real notebooks run once a session, in ``smoke_run``; test_lesson_notebooks.py checks what
    00 publishes there): the smoke value reaches the notebook, and what it published and the
    executed copy land in --out."""
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("matmul_size = 1024")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell(
        "from internvl_course.course.publish import publish\npublish('matmul_size', matmul_size)")]
    nb.metadata["kernelspec"] = {"name": "internvl-course", "display_name": "x", "language": "python"}
    nbformat.write(nb, root / "notebooks" / plan.COURSE[0].filename)
    out = tmp_path / "out"
    cli = REPO / ".venv" / "bin" / "internvl-course"
    result = subprocess.run([str(cli), "run", "--only", "00", "--params", "smoke", "--out", str(out)],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "INTERNVL_COURSE_ROOT": str(root)})
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    [entry] = summary["results"]
    assert entry["notebook"] == "00_check_your_setup.ipynb" and entry["status"] == "ok"
    assert entry["published"] == {"matmul_size": plan.SMOKE_PARAMS["00"]["matmul_size"]} != {"matmul_size": 1024}
    assert (out / "00_check_your_setup.ipynb").exists()
    assert "00_check_your_setup.ipynb | ok" in (out / "summary.md").read_text()
