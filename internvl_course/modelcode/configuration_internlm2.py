"""Configuration of InternLM2, the language model of InternVL2-2B.

Field names and defaults follow InternLM's ``InternLM2Config`` (model_type "internlm2"; the
defaults describe InternLM2-7B). InternVL2-2B's llm_config (internlm2-chat-1.8b) sets hidden
2048, 24 layers, 16 heads, 8 KV heads, intermediate 8192, vocab 92553, bias false,
rms_norm_eps 1e-5, max_position_embeddings 32768, rope_theta 1e6 and dynamic rope scaling x2.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

#: Where a model directory's config.json points transformers for a standalone InternLM2.
LLM_AUTO_MAP = {
    "AutoConfig": "configuration_internlm2.InternLM2Config",
    "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
    "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
}

ROPE_SCALING_TYPES = ("linear", "dynamic")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


class InternLM2Config(PretrainedConfig):
    """Sizes and options of an InternLM2 decoder.

    ``attn_implementation`` ("eager", "sdpa" or "flash_attention_2") is InternLM2's own field,
    not transformers' private ``_attn_implementation``, and it alone picks the attention code:
    XTuner sets it to "flash_attention_2" before loading, which runs on SDPA (see
    modeling_internlm2.resolve_attn_implementation). Eager and SDPA give the same results.
    """

    model_type = "internlm2"
    # transformers 5 turns `rope_scaling` into a deprecated alias of its own `rope_parameters`.
    # Shadowing it with a plain attribute keeps InternLM2's field as it is in config.json, so
    # that a directory saved under transformers 5 still loads the same under 4.48 and LMDeploy.
    rope_scaling = None

    def __init__(
        self,
        vocab_size: int = 103168,
        hidden_size: int = 4096,
        intermediate_size: int = 11008,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        tie_word_embeddings: bool = False,
        bias: bool = True,
        rope_theta: float = 10000,
        rope_scaling: dict[str, Any] | None = None,
        attn_implementation: str | None = "eager",
        auto_map: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        num_key_value_heads = num_key_value_heads or num_attention_heads
        if hidden_size % num_attention_heads or num_attention_heads % num_key_value_heads:
            raise ValueError(
                f"need hidden_size % heads == 0 and heads % kv_heads == 0, got "
                f"{hidden_size}, {num_attention_heads}, {num_key_value_heads}"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.bias = bias
        self.rope_theta = rope_theta
        self.rope_scaling = _checked_rope_scaling(rope_scaling)
        # Official InternLM2 reads a missing value as eager.
        self.attn_implementation = attn_implementation or "eager"
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")
        self.auto_map = auto_map or dict(LLM_AUTO_MAP)
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


def _checked_rope_scaling(rope_scaling: dict[str, Any] | None) -> dict[str, Any] | None:
    """InternLM2 knows two scalings: {"type": "linear" | "dynamic", "factor": float >= 1}."""
    if rope_scaling is None:
        return None
    kind, factor = rope_scaling.get("type"), rope_scaling.get("factor")
    if kind not in ROPE_SCALING_TYPES or not isinstance(factor, (int, float)) or factor < 1:
        raise ValueError(f"rope_scaling must be {{'type': linear|dynamic, 'factor': >= 1}}, got {rope_scaling}")
    return {"type": kind, "factor": float(factor)}
