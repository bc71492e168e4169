"""An mmengine hook for tests: hold a training run still right after a given checkpoint is saved.

tests/test_training.py appends it to an XTuner config (with ``tests/`` on ``PYTHONPATH``) to kill
a run at a known point instead of racing it: once iteration ``iteration`` has been trained and its
checkpoint written, the hook creates the file ``marker`` and waits for a signal (the test's
SIGKILL). A run resumed from that checkpoint starts after ``iteration``, so it trains on.
"""

from __future__ import annotations

import signal
from pathlib import Path

from mmengine.hooks import Hook


class PauseAfterCheckpoint(Hook):
    # After mmengine's CheckpointHook (VERY_LOW), which saves the checkpoint and then points
    # last_checkpoint at it in the same after_train_iter call.
    priority = "LOWEST"

    def __init__(self, iteration: int, marker: str) -> None:
        self.iteration, self.marker = iteration, Path(marker)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            self.marker.write_text(f"paused after iteration {self.iteration}\n", encoding="utf-8")
            while True:
                signal.pause()
