"""A full-size InternVL2-2B- or -1B-shaped model with random weights, for GPU checks and benchmarks.

The kit cannot download InternVL2-2B, but what a GPU costs (load time, memory, throughput)
depends on the architecture, not on the values of the weights. This builds OpenGVLab's published
InternVL2-2B configuration (2.2 B parameters, official names and files) with random weights and
the kit's own tokenizer, so LMDeploy, XTuner and our code can be measured on the real shape.
``family="internvl2-1b"`` builds InternVL2-1B's shape (Qwen2-0.5B LLM, the kit's byte-level BPE
tokenizer, the Hermes-2 template) the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from internvl_course.fileio import refuse_existing
from internvl_course.model.write import write_model_folder
from internvl_course.modelcode.configuration_internvl_chat import InternVLChatConfig
from internvl_course.tiny.build import TINY_FAMILIES, family_tokenizer, generation_config


def build_full_size_model(out_dir: str | Path, seed: int = 0, device: str = "cuda",
                          dtype: torch.dtype = torch.bfloat16, family: str = "internvl2-2b") -> Path:
    """Write an InternVL2-2B-shaped model directory with random weights to ``out_dir``.

    The vocabulary stays the release's (InternVL2-2B: 92553 rows); the kit's tokenizer uses the first ones, so
    the output rows of the ids it does not have are zeroed (a random model would otherwise pick
    ids that no tokenizer can decode). Weights are created on ``device`` (seconds on a GPU,
    minutes on a CPU) in ``dtype``; the folder is written by ``model.write.write_model_folder``,
    assembled beside ``out_dir`` and renamed.
    """
    from internvl_course.modelcode.modeling_internvl_chat import InternVLChatModel

    refuse_existing(Path(out_dir))  # before minutes of weight initialisation, not after
    with family_tokenizer(family) as (tokenizer, tokenizer_files):
        config = InternVLChatConfig(**json.loads(json.dumps(TINY_FAMILIES[family]["config"])))  # a deep copy
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                torch.manual_seed(seed)
                model = InternVLChatModel(config).eval()
        finally:
            torch.set_default_dtype(previous)
        with torch.no_grad():
            model.language_model.get_output_embeddings().weight[len(tokenizer):] = 0
        return write_model_folder(model, tokenizer, out_dir, tokenizer_files=tokenizer_files,
                                  generation_config=generation_config(tokenizer, family))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="internvl-course fullsize",
                                     description="Build a random-weight InternVL2-2B- or -1B-shaped model directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--family", default="internvl2-2b", choices=sorted(TINY_FAMILIES))
    args = parser.parse_args(argv)
    print(build_full_size_model(args.out_dir, device=args.device, family=args.family))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
