"""The docs point at real things: the bad-input table names tests that exist."""

from __future__ import annotations

import ast
import re

from conftest import REPO

TABLE = REPO / "docs" / "bad-inputs.md"


def _test_names(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_row_of_the_bad_input_table_names_an_existing_test():
    rows = [line for line in TABLE.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith("| input") and not line.startswith("| ---")]
    assert len(rows) >= 40
    for row in rows:
        cited = re.findall(r"(tests/\w+\.py)::(\w+)", row)
        assert cited, f"a row without its test: {row[:80]}"
        for file, name in cited:
            assert name in _test_names(REPO / file), f"{file}::{name} (cited in docs/bad-inputs.md) does not exist"
