"""Helpers for code that runs inside the course notebooks."""

from __future__ import annotations


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
