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
