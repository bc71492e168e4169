"""Published configuration values of OpenGVLab/InternVL2-2B, for building full-size models.

Not one of the files a model directory carries: the kit uses these values to build an
InternVL2-2B-shaped model (on the meta device in tests, with random weights on a GPU) and to
check that our code lays out exactly the official parameters. The values are those of
InternVL2-2B's config.json, without the generation defaults and bookkeeping fields
(temperature, top_k, id2label, transformers_version, ...) that transformers writes into every
config.
"""

from __future__ import annotations

INTERNVL2_2B_CONFIG: dict = {
    "architectures": ["InternVLChatModel"],
    "downsample_ratio": 0.5,
    "dynamic_image_size": True,
    "force_image_size": 448,
    "max_dynamic_patch": 12,
    "min_dynamic_patch": 1,
    "ps_version": "v2",
    "select_layer": -1,
    "template": "internlm2-chat",
    "torch_dtype": "bfloat16",
    "use_backbone_lora": 0,
    "use_llm_lora": 0,
    "use_thumbnail": True,
    # InternViT-300M-448px
    "vision_config": {
        "architectures": ["InternVisionModel"],
        "attention_dropout": 0.0,
        "drop_path_rate": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": 1024,
        "image_size": 448,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4096,
        "layer_norm_eps": 1e-06,
        "norm_type": "layer_norm",
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "qk_normalization": False,
        "qkv_bias": True,
        "use_flash_attn": True,
    },
    # internlm2-chat-1.8b, with the vocabulary grown by InternVL's special tokens (92544 -> 92553)
    "llm_config": {
        "architectures": ["InternLM2ForCausalLM"],
        "attn_implementation": "flash_attention_2",
        "bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "max_position_embeddings": 32768,
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "num_key_value_heads": 8,
        "pad_token_id": 2,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 2.0, "type": "dynamic"},
        "rope_theta": 1000000,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": 92553,
    },
}

# InternVL2-1B (OpenGVLab model card: InternViT-300M-448px + Qwen2-0.5B-Instruct, template
# "Hermes-2"): the vision side and the joining fields are InternVL2-2B's; the LLM is Qwen2-0.5B
# with the vocabulary grown by InternVL's special tokens (151643 + 12 = 151655).
INTERNVL2_1B_CONFIG: dict = {
    **{k: v for k, v in INTERNVL2_2B_CONFIG.items() if k != "llm_config"},
    "template": "Hermes-2",
    "llm_config": {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "attn_implementation": "flash_attention_2",
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "hidden_size": 896,
        "initializer_range": 0.02,
        "intermediate_size": 4864,
        "max_position_embeddings": 32768,
        "max_window_layers": 24,
        "model_type": "qwen2",
        "num_attention_heads": 14,
        "num_hidden_layers": 24,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151655,
    },
}

# InternVL2.5-2B (OpenGVLab model card: InternViT-300M-448px-V2_5 + internlm2_5-1_8b-chat,
# template "internvl2_5"): InternVL2-2B's shapes, a new LLM generation and a new chat template.
INTERNVL2_5_2B_CONFIG: dict = {**INTERNVL2_2B_CONFIG, "template": "internvl2_5"}
