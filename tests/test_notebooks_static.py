"""Static tier: every notebook is valid, parses, is named and parameterised by the conventions."""

from __future__ import annotations

import ast
import re

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat")
from internvl_course.course import plan  # noqa: E402

pytestmark = pytest.mark.notebooks
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), f"{path.name}: use NN_lowercase_name.ipynb"
    assert path.name in {nb.filename for nb in plan.COURSE}, f"{path.name} is not in plan.COURSE"
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
    for number, params in plan.SMOKE_PARAMS.items():
        nb = next(n for n in plan.COURSE if n.number == number)
        source = next(c.source for c in nbformat.read(nb.path(), as_version=4).cells
                      if "parameters" in c.metadata.get("tags", []))
        assigned = {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets}
        assert set(params) <= assigned, f"{nb.filename}: smoke params {set(params) - assigned} are not parameters"


def _code(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_progress_bars_suit_a_headless_run(path):
    """tqdm.auto (a widget in JupyterLab, text elsewhere) or the kit's own bars, which use it:
    never plain tqdm (a wall of stderr lines in a notebook) nor tqdm.notebook (breaks without widgets)."""
    for source in _code(path):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tqdm":
                assert node.module == "tqdm.auto", f"{path.name}: from {node.module} import ...; use tqdm.auto"
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.split(".")[0] == "tqdm" and a.name != "tqdm.auto"]
                assert not bad, f"{path.name}: import {bad[0]}; use tqdm.auto"


#: A hub id as the first argument of a loader: the kit never downloads weights or data.
HUB_DOWNLOAD = re.compile(r"(from_pretrained|pipeline|snapshot_download|hf_hub_download|load_dataset)\(\s*"
                          r"[\"'][\w.-]+/[\w.-]+[\"']")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_hub_downloads(path):
    for source in _code(path):
        assert not HUB_DOWNLOAD.search(source), f"{path.name}: {HUB_DOWNLOAD.search(source).group(0)}"
        assert "huggingface_hub" not in source, f"{path.name} imports huggingface_hub"


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If):
            return True
    return False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_widgets_and_demos_start_only_when_interactive(path):
    """A headless run has nobody to use a widget or a demo server (and a server would never stop)."""
    for source in _code(path):
        tree = ast.parse(source)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        starts = [n for n in ast.walk(tree)
                  if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "launch")
                  or (isinstance(n, (ast.Import, ast.ImportFrom)) and "ipywidgets" in ast.unparse(n))]
        for node in starts:
            assert "is_interactive()" in source and _guarded(node, parents), (
                f"{path.name}: `{ast.unparse(node)[:60]}` must sit under an if that follows notebook.is_interactive()")


def _kit_callables(tree: ast.Module) -> dict[str, object]:
    """The names a notebook cell imports from internvl_course, bound to the objects they name."""
    import importlib

    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("internvl_course"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):  # a submodule: `from internvl_course.data import food_vqa`
                    importlib.import_module(f"{node.module}.{alias.name}")
                names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def _called(node: ast.Call, kit: dict[str, object]) -> tuple[str, object] | None:
    """``f(...)`` or ``module.f(...)`` where ``f`` comes from the kit."""
    import types

    if isinstance(node.func, ast.Name) and node.func.id in kit:
        return node.func.id, kit[node.func.id]
    if (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
            and isinstance(kit.get(node.func.value.id), types.ModuleType)):
        module = kit[node.func.value.id]
        return f"{node.func.value.id}.{node.func.attr}", getattr(module, node.func.attr, None)
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_call_of_a_kit_function_fits_its_signature(path):
    """Code that only runs interactively (a demo, a widget) is never executed headless: a wrong
    keyword there would first fail in front of a student. So each call of a function or class the
    notebook imports from the kit is bound to its signature here."""
    import inspect

    nb = nbformat.read(path, as_version=4)
    tree = ast.parse("\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    kit = _kit_callables(tree)
    checked = 0
    for node in ast.walk(tree):
        found = _called(node, kit) if isinstance(node, ast.Call) else None
        if found is None:
            continue
        name, target = found
        assert target is not None, f"{path.name} line {node.lineno} of its code: {name} does not exist"
        if not callable(target):
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        try:
            signature.bind(*node.args, **{k.arg: None for k in node.keywords})
        except TypeError as error:
            raise AssertionError(f"{path.name} line {node.lineno} of its code: {name}(...): {error}") from None
        checked += 1
    assert checked or not kit or path.name.startswith("00"), f"{path.name}: no call of a kit function was checked"
