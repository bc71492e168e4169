"""A full-size InternVL2-2B-shaped model with random weights, for GPU checks and benchmarks.

The kit cannot download InternVL2-2B, but what a GPU costs (load time, memory, throughput)
depends on the architecture, not on the values of the weights. This builds OpenGVLab's published
InternVL2-2B configuration (2.2 B parameters, official names and files) with random weights and
the kit's own tokenizer, so LMDeploy, XTuner and our code can be measured on the real shape.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .modelcode.configuration_internvl_chat import MODEL_CODE_FILES, InternVLChatConfig
from .fileio import atomic_directory
from .modelcode.official_configs import INTERNVL2_2B_CONFIG
from .tiny import MODELCODE, generation_config
from .tokenizer_build import build_tokenizer


def build_full_size_model(out_dir: str | Path, seed: int = 0, device: str = "cuda",
                          dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write an InternVL2-2B-shaped model directory with random weights to ``out_dir``.

    The vocabulary stays InternVL2-2B's 92553 rows; the kit's tokenizer uses the first ones, so
    the output rows of the ids it does not have are zeroed (a random model would otherwise pick
    ids that no tokenizer can decode). Weights are created on ``device`` (seconds on a GPU,
    minutes on a CPU) in ``dtype``; the folder is assembled beside ``out_dir`` and renamed.
    """
    from transformers import AutoTokenizer

    from .modelcode.modeling_internvl_chat import InternVLChatModel

    out = Path(out_dir)
    with atomic_directory(out) as staging:
        build_tokenizer(staging)
        tokenizer = AutoTokenizer.from_pretrained(staging, trust_remote_code=True)
        config = InternVLChatConfig(**json.loads(json.dumps(INTERNVL2_2B_CONFIG)))  # a deep copy
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
        model.save_pretrained(staging, safe_serialization=True)
        for name in MODEL_CODE_FILES:
            shutil.copyfile(MODELCODE / name, staging / name)
        (staging / "generation_config.json").write_text(
            json.dumps(generation_config(tokenizer), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build a random-weight InternVL2-2B-shaped model directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(build_full_size_model(args.out_dir, device=args.device))
