"""Static tier: every notebook is valid, parses, is named and parameterised by the conventions."""

from __future__ import annotations

import ast
import re

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat")
from internvl_course import lessons  # noqa: E402

pytestmark = pytest.mark.notebooks
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), f"{path.name}: use NN_lowercase_name.ipynb"
    assert path.name in {nb.filename for nb in lessons.COURSE}, f"{path.name} is not in lessons.COURSE"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "internvl-course"
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, f"{path.name}: exactly one cell tagged 'parameters', found {len(parameters)}"
    assert parameters[0].cell_type == "code"
    for cell in nb.cells:
        if cell.cell_type == "code":
            ast.parse(cell.source)  # raises with the line that does not parse
    text = path.read_text()
    assert not re.search(r'"/(root|work|tmp|home)/', text), f"{path.name} holds an absolute path"


def test_smoke_params_only_name_real_parameters():
    for number, params in lessons.SMOKE_PARAMS.items():
        nb = next(n for n in lessons.COURSE if n.number == number)
        source = next(c.source for c in nbformat.read(nb.path(), as_version=4).cells
                      if "parameters" in c.metadata.get("tags", []))
        assigned = {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets}
        assert set(params) <= assigned, f"{nb.filename}: smoke params {set(params) - assigned} are not parameters"
