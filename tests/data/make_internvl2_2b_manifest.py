"""Write internvl2_2b_params.json: every parameter name and shape of InternVL2-2B, by hand.

Derived only from the published architecture (InternVL2 model card and config.json; the kit's
docs/design.md, "InternVL2"), deliberately without importing the kit's model code, so that the test
comparing the two checks our code against an independent count:

* InternViT-300M-448px: hidden 1024, 24 layers, intermediate 4096, patch 14, image 448,
  qkv with bias, LayerNorm (weight and bias), layer scale ls1/ls2, class token, learned
  position embedding for 1 + 32*32 positions, no q/k norm.
* mlp1: LayerNorm(4*1024) -> Linear(4096, 2048) -> GELU -> Linear(2048, 2048).
* InternLM2-1.8B: hidden 2048, 24 layers, 16 heads of 128, 8 KV heads, intermediate 8192,
  vocab 92553, no biases, RMSNorm (weight only), untied output head; wqkv packs
  16 query + 8 key + 8 value heads.

Run: python tests/data/make_internvl2_2b_manifest.py
"""

from __future__ import annotations

import json
from math import prod
from pathlib import Path

VIT = dict(hidden=1024, layers=24, intermediate=4096, patch=14, image=448, channels=3)
LLM = dict(hidden=2048, layers=24, heads=16, kv_heads=8, intermediate=8192, vocab=92553)
DOWNSAMPLE = 0.5


def vision_params() -> dict[str, list[int]]:
    d, f = VIT["hidden"], VIT["intermediate"]
    grid = VIT["image"] // VIT["patch"]  # 32
    params = {
        "vision_model.embeddings.class_embedding": [1, 1, d],
        "vision_model.embeddings.patch_embedding.weight": [d, VIT["channels"], VIT["patch"], VIT["patch"]],
        "vision_model.embeddings.patch_embedding.bias": [d],
        "vision_model.embeddings.position_embedding": [1, 1 + grid * grid, d],
    }
    for i in range(VIT["layers"]):
        p = f"vision_model.encoder.layers.{i}."
        params |= {
            p + "ls1": [d],
            p + "ls2": [d],
            p + "attn.qkv.weight": [3 * d, d],
            p + "attn.qkv.bias": [3 * d],
            p + "attn.proj.weight": [d, d],
            p + "attn.proj.bias": [d],
            p + "mlp.fc1.weight": [f, d],
            p + "mlp.fc1.bias": [f],
            p + "mlp.fc2.weight": [d, f],
            p + "mlp.fc2.bias": [d],
            p + "norm1.weight": [d],
            p + "norm1.bias": [d],
            p + "norm2.weight": [d],
            p + "norm2.bias": [d],
        }
    return params


def projector_params() -> dict[str, list[int]]:
    shuffled = VIT["hidden"] * int(1 / DOWNSAMPLE) ** 2  # 4096
    h = LLM["hidden"]
    return {
        "mlp1.0.weight": [shuffled],
        "mlp1.0.bias": [shuffled],
        "mlp1.1.weight": [h, shuffled],
        "mlp1.1.bias": [h],
        "mlp1.3.weight": [h, h],
        "mlp1.3.bias": [h],
    }


def language_params() -> dict[str, list[int]]:
    h, f, v = LLM["hidden"], LLM["intermediate"], LLM["vocab"]
    head_dim = h // LLM["heads"]  # 128
    qkv = (LLM["heads"] + 2 * LLM["kv_heads"]) * head_dim  # 4096
    params = {"language_model.model.tok_embeddings.weight": [v, h]}
    for i in range(LLM["layers"]):
        p = f"language_model.model.layers.{i}."
        params |= {
            p + "attention.wqkv.weight": [qkv, h],
            p + "attention.wo.weight": [h, LLM["heads"] * head_dim],
            p + "feed_forward.w1.weight": [f, h],
            p + "feed_forward.w3.weight": [f, h],
            p + "feed_forward.w2.weight": [h, f],
            p + "attention_norm.weight": [h],
            p + "ffn_norm.weight": [h],
        }
    params |= {"language_model.model.norm.weight": [h], "language_model.output.weight": [v, h]}
    return params


def manifest() -> dict:
    params = vision_params() | projector_params() | language_params()
    return {
        "model": "OpenGVLab/InternVL2-2B",
        "total_parameters": sum(prod(shape) for shape in params.values()),
        "parameters": params,
    }


if __name__ == "__main__":
    data = manifest()
    # One tensor a line, so that a diff of the file reads like a diff of the architecture.
    rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(shape)}" for name, shape in data["parameters"].items())
    text = (
        f'{{\n "model": {json.dumps(data["model"])},\n "total_parameters": {data["total_parameters"]},\n'
        f' "parameters": {{\n{rows}\n }}\n}}\n'
    )
    out = Path(__file__).with_name("internvl2_2b_params.json")
    out.write_text(text, encoding="utf-8")
    data = json.loads(out.read_text(encoding="utf-8"))
    print(f"{out}: {len(data['parameters'])} tensors, {data['total_parameters']:,} parameters")
