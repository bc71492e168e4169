"""Run ``xtuner.tools.train`` in the train env, on a CPU as well as on GPUs.

Usage (inside ``.venv-train``)::

    python -m internvl_course.xtuner_launch CONFIG [xtuner.tools.train arguments ...]

On a CUDA machine this is plain ``xtuner.tools.train``. On a CPU it first sets up what XTuner
0.2.0 cannot set up itself there (FACTS.md section 2): XTuner's InternVL model calls
``torch.distributed.get_rank()``, and mmengine's ``pytorch`` launcher calls
``torch.cuda.set_device``, so a one-process gloo group is initialised here, before XTuner's own
``main()`` runs as ``__main__``. The exit status is XTuner's own (``xtuner train`` would drop it).
"""

from __future__ import annotations

import os
import runpy
import socket
import sys


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


def internvl_model(activation_checkpointing: bool = True, trainable_fp32: bool = False, **kwargs):
    """XTuner's ``InternVL_V1_5`` model, with two switches a CPU run needs.

    - ``trainable_fp32``: XTuner loads InternVL in bfloat16 and PEFT lifts only the LLM to
      float32, so ``mlp1`` trains in bfloat16. On a GPU DeepSpeed keeps float32 master weights;
      a CPU's plain ``OptimWrapper`` updates the bfloat16 weights themselves, where a step under
      about 1/256 of a weight rounds away (the late, small learning rates of a cosine schedule).
      So ``mlp1`` becomes float32, and its bfloat16 input from the frozen ViT is cast on the way in.
    - ``activation_checkpointing``: XTuner always recomputes the LLM's activations in the
      backward pass, trading time for GPU memory; the tiny model's activations are a few MB, and
      on 2 CPU cores the recomputation was a sixth of every step (profiled).
    """
    from xtuner.model import InternVL_V1_5

    model = InternVL_V1_5(**kwargs)
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
        raise SystemExit("usage: python -m internvl_course.xtuner_launch CONFIG [xtuner.tools.train arguments]")
    import torch

    if not torch.cuda.is_available():
        init_cpu_process_group()
    sys.argv = ["xtuner.tools.train", *argv]
    runpy.run_module("xtuner.tools.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
