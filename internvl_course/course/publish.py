"""Notebooks publish their key numbers; the runner's summary and the tests read them back.

A published value is a display output with its own MIME type, so it survives papermill, shows
as ``name = value`` to a student, and needs no extra package (recommenders uses scrapbook for
the same idea).
"""

from __future__ import annotations

import json
import numbers
from typing import Any

MIME = "application/vnd.internvl-course.published+json"


def _plain(value: Any) -> Any:
    """numpy and torch scalars become plain JSON numbers."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    json.dumps(value)  # lists and dicts must already be JSON: fail here, naming the value, if not
    return value


def publish(name: str, value: Any) -> Any:
    """Show ``name = value`` in the notebook and record it for the runner and the tests."""
    from IPython.display import display

    plain = _plain(value)
    display({MIME: {name: plain}, "text/plain": f"{name} = {plain!r}"}, raw=True)
    return value


def read_published(notebook: Any) -> dict[str, Any]:
    """Every value a (executed) notebook published, in order; later values win."""
    found: dict[str, Any] = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if MIME in data:
                found.update(data[MIME])
    return found
