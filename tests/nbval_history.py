"""pytest plugin for the nbval tier (``-p tests.nbval_history``): send cells as JupyterLab does.

nbval 0.11 executes every cell with ``store_history=False``, and IPython decides whether a
trailing ``;`` silences a cell's value by reading that cell back from the history (nbval issue
194, IPython issue 14162). So under nbval every ``plot_...(...);`` cell showed its figure twice,
once as the silenced value and once from the inline backend, unlike JupyterLab and papermill,
which made the committed outputs of such cells impossible to compare. Remove this plugin once
nbval sends cells with history again.
"""

from __future__ import annotations

from typing import Any

from nbval.kernel import RunningKernel


def _execute_cell_input(self: RunningKernel, cell_input: str, allow_stdin: bool | None = None) -> Any:
    return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)


RunningKernel.execute_cell_input = _execute_cell_input
