"""Run ``xtuner.tools.train`` in the train env, on a CPU as well as on GPUs.

Usage (inside ``.venv-train``)::

    python -m internvl_course.finetune.launch CONFIG [xtuner.tools.train arguments ...]

On a CUDA machine this is plain ``xtuner.tools.train``. On a CPU it first sets up what XTuner
0.2.0 cannot set up itself there (docs/design.md, "XTuner 0.2.0"): XTuner's InternVL model calls
``torch.distributed.get_rank()``, and mmengine's ``pytorch`` launcher calls
``torch.cuda.set_device``, so a one-process gloo group is initialised here, before XTuner's own
``main()`` runs as ``__main__``. The exit status is XTuner's own (``xtuner train`` would drop it).

A training run lives only as long as the process that started it (``OWNER_ENV``): when a
notebook kernel that called ``training.train`` dies, nobody reads the run's output any more, and
a run left going would train on beside the next one.
"""

from __future__ import annotations

import hashlib
import os
import runpy
import select
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: this module starts XTuner's process
    import torch


#: The process id of the process this run belongs to (``training.train`` sets it to its own). The run
#: stops when that process exits, even where ``torchrun`` sits between the two.
OWNER_ENV = "INTERNVL_COURSE_TRAIN_OWNER"


def _wait_for_exit(pid: int) -> None:
    """Return once process ``pid`` has exited (at once if it already has)."""
    try:
        handle = os.pidfd_open(pid)  # Linux: readable when that very process exits, whoever reuses its id later
    except ProcessLookupError:
        return
    except AttributeError:  # no pidfd on this system: ask once a second
        while True:
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):  # gone, or its id now another user's process
                return
            time.sleep(1)
    try:
        select.select([handle], [], [])
    finally:
        os.close(handle)


def _stop_with(owner: int) -> None:
    _wait_for_exit(owner)
    # This process leads its own process group (training.train starts it in a new session, torchrun
    # starts each worker in one): SIGKILL to the group also ends the data loader processes it forked.
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    else:
        os.kill(os.getpid(), signal.SIGKILL)


def stop_with_owner() -> None:
    """Watch the process named by ``OWNER_ENV`` (if any: not in a run started by hand) from a
    daemon thread, and end this run when it exits.

    A notebook kernel killed while training never tells its child; without this the run went on
    unlogged, and ``train()`` run again resumed beside it, two trainers writing one work folder.
    """
    owner = os.environ.get(OWNER_ENV)
    if owner:
        threading.Thread(target=_stop_with, args=(int(owner),), name="stop-with-owner", daemon=True).start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_cpu_process_group() -> None:
    """A world of one process on gloo, with the variables DeepSpeed also reads (else it looks for mpi4py)."""
    import torch.distributed as dist

    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", rank=0, world_size=1)


def cache_vision_features(vision_model) -> dict[bytes, torch.Tensor]:
    """Make a frozen ``vision_model`` compute each tile's features once, then reuse them.

    XTuner runs the vision encoder on every picture of every step, though a frozen encoder without
    dropout gives the same features for the same pixels each time (XTuner's InternVL dataset does
    not augment; an encoder configured with dropout or drop-path is refused).
    Tiles are keyed by a hash of their pixel bytes, so a hit returns exactly what the encoder
    would compute. The pretraining stages of ``internvl_course.tiny.pretrain`` cache ViT features too.
    Memory: tiles x (1 + patches) x width x 2 bytes, 94 MB for the kit's 720 training pictures
    but about 2 MB a tile at InternVL2-2B's width; on an H100 it saved nothing (the ViT is a small
    share of the step there, and hashing happens on the CPU), so the GPU presets leave it off.
    Returns the cache (tile hash -> features), for tests and for a look at its size.
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    random_parts = {name: getattr(vision_model.config, name, 0.0)
                    for name in ("drop_path_rate", "dropout", "attention_dropout")}
    if any(random_parts.values()):
        raise ValueError(f"the vision encoder drops out at random while training "
                         f"({', '.join(f'{k}={v}' for k, v in random_parts.items() if v)} in its config), so its "
                         "features differ from step to step; set cache_vision_features=False")
    cache: dict[bytes, torch.Tensor] = {}
    compute = vision_model.forward

    def forward(pixel_values, output_hidden_states=None, return_dict=None, **kwargs):
        if output_hidden_states or return_dict is False:  # a middle layer or a tuple: no shortcut
            return compute(pixel_values, output_hidden_states=output_hidden_states, return_dict=return_dict, **kwargs)
        keys = [hashlib.sha256(tile.detach().contiguous().cpu().view(torch.uint8).numpy()).digest()
                for tile in pixel_values]
        missing = sorted({keys.index(key) for key in keys if key not in cache})
        if missing:
            with torch.no_grad():
                fresh = compute(pixel_values[missing], return_dict=True, **kwargs).last_hidden_state
            for row, index in enumerate(missing):
                cache[keys[index]] = fresh[row].clone()
        last = torch.stack([cache[key] for key in keys])
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=last[:, 0])

    vision_model.forward = forward
    return cache


def internvl_model(activation_checkpointing: bool = True, trainable_fp32: bool = False,
                   cache_vision: bool = False, **kwargs):
    """XTuner's ``InternVL_V1_5`` model, with three switches a CPU run needs.

    - ``trainable_fp32``: XTuner loads InternVL in bfloat16 and PEFT lifts only the LLM to
      float32, so ``mlp1`` trains in bfloat16. On a GPU DeepSpeed keeps float32 master weights;
      a CPU's plain ``OptimWrapper`` updates the bfloat16 weights themselves, where a step under
      about 1/256 of a weight rounds away (the late, small learning rates of a cosine schedule).
      So ``mlp1`` becomes float32, and its bfloat16 input from the frozen ViT is cast on the way in.
    - ``activation_checkpointing``: XTuner always recomputes the LLM's activations in the
      backward pass, trading time for GPU memory; the tiny model's activations are a few MB, and
      on 2 CPU cores the recomputation was a sixth of every step (profiled).
    - ``cache_vision``: a frozen ViT's features computed once per tile (``cache_vision_features``).
    """
    from xtuner.model import InternVL_V1_5

    model = InternVL_V1_5(**kwargs)
    if cache_vision:
        cache_vision_features(model.model.vision_model)
    if trainable_fp32:
        mlp1 = model.model.mlp1.float()
        mlp1.register_forward_pre_hook(lambda _module, args: tuple(a.float() for a in args))
    if not activation_checkpointing:
        model.gradient_checkpointing_disable()
    return model


def internvl_dataset(max_dynamic_patch: int | None = None, **kwargs):
    """XTuner's ``InternVL_V1_5_Dataset``, with at most ``max_dynamic_patch`` tiles a picture.

    The dataset takes the tile limit from the model's config.json (12 for InternVL2-2B); a config
    can lower it here, for less memory, without touching the model directory.
    """
    from xtuner.dataset import InternVL_V1_5_Dataset

    dataset = InternVL_V1_5_Dataset(**kwargs)
    if max_dynamic_patch is not None:
        if max_dynamic_patch < dataset.min_dynamic_patch:
            raise ValueError(f"max_dynamic_patch={max_dynamic_patch} is below the model's min_dynamic_patch "
                             f"({dataset.min_dynamic_patch})")
        dataset.max_dynamic_patch = max_dynamic_patch
    return dataset


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m internvl_course.finetune.launch CONFIG [xtuner.tools.train arguments]")
    stop_with_owner()
    import torch

    if not torch.cuda.is_available():
        init_cpu_process_group()
    sys.argv = ["xtuner.tools.train", *argv]
    runpy.run_module("xtuner.tools.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
