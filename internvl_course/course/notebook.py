"""Helpers for code that runs inside the course notebooks."""

from __future__ import annotations

import os
from typing import Any

#: ``smoke``, ``full`` or a YAML/JSON file (the runner's ``--params``), for executors that cannot
#: pass parameters themselves: ``pytest --nbval-lax`` runs the notebooks' own cells, nothing else.
PARAMS_ENV = "INTERNVL_COURSE_PARAMS"


def is_interactive() -> bool:
    """True in a notebook a person is running; False under papermill, nbconvert and plain Python.

    A person's front end (JupyterLab, Notebook, VS Code) lets the kernel ask for input
    (``allow_stdin``); headless executors such as papermill's nbclient send every cell with it
    switched off: nobody is there to move a slider or visit a demo. So widgets and demo servers
    start only when this is True, and a headless course run renders the defaults once.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    return bool(getattr(kernel, "_allow_stdin", False))


def apply_params(number: str, namespace: dict[str, Any]) -> None:
    """Override notebook ``number``'s parameters from ``$INTERNVL_COURSE_PARAMS``; unset, do nothing.

    The cell after each notebook's ``parameters`` cell calls this, so that an nbval run (which
    cannot inject parameters as papermill does) finishes in seconds with ``smoke``. It prints what
    it changed, so an output made with other values says so. A name that is not in the notebook's
    parameters cell is an error (``runner.load_params`` checks every notebook's names): a typo in a
    parameters file must not silently run the defaults, nor overwrite some other variable. It
    returns nothing, so that the cell shows nothing when the variable is unset.
    """
    choice = os.environ.get(PARAMS_ENV, "")
    if not choice:
        return
    from internvl_course.course.runner import load_params

    try:
        changes = load_params(choice).get(number, {})
    except SystemExit as refused:  # the runner's way to stop; in a notebook an exception stops the cell
        raise NameError(f"{PARAMS_ENV}={choice}: {refused.code}") from None
    for name, value in changes.items():
        print(f"{PARAMS_ENV}={choice}: {name} = {value!r} (was {namespace[name]!r})")
    namespace.update(changes)
