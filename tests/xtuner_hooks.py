"""mmengine hooks for tests, appended to an XTuner config (with ``tests/`` on ``PYTHONPATH``).

``xtuner_run`` in tests/conftest.py trains once for many tests; these hooks let that one run
answer questions that would otherwise need runs of their own:

- ``PauseAfterCheckpoint`` holds the run still right after a given checkpoint is saved, so that a
  test kills it at a known point instead of racing it. A run resumed from that checkpoint starts
  after it, so it trains on.
- ``RecordFirstSample`` writes the first training sample as XTuner's dataset built it (token
  ids, labels, tiles): the prompt the model is trained on, for the train/serve tests.
"""

from __future__ import annotations

import json
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


class RecordFirstSample(Hook):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def before_train(self, runner) -> None:
        sample = runner.train_dataloader.dataset[0]
        self.path.write_text(json.dumps({"input_ids": [int(i) for i in sample["input_ids"]],
                                         "labels": [int(i) for i in sample["labels"]],
                                         "tiles": int(sample["pixel_values"].shape[0])}), encoding="utf-8")
