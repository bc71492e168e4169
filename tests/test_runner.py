"""``internvl-course run``: parameters, selection, summaries, and failures that name notebook and cell."""

from __future__ import annotations

import json
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


def test_cli_runs_the_setup_notebook_and_writes_a_summary(tmp_path):
    cli = REPO / ".venv" / "bin" / "internvl-course"
    result = subprocess.run([str(cli), "run", "--only", "00", "--params", "smoke", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    [entry] = summary["results"]
    assert entry["notebook"] == "00_check_your_setup.ipynb" and entry["status"] == "ok"
    assert entry["published"]["doctor_problems"] == 0
    assert entry["published"]["notebooks_ready"] == len(plan.present())
    assert entry["published"]["matmul_gflops"] > 0
    assert (tmp_path / "00_check_your_setup.ipynb").exists()
    assert "00_check_your_setup.ipynb | ok" in (tmp_path / "summary.md").read_text()
