"""InternLM2: the language model of InternVL2-2B.

A Llama-style decoder (RMSNorm, rotary position embedding, SwiGLU feed-forward, grouped-query
attention). Its one unusual trait is the packed ``wqkv`` projection, laid out per KV group: for
each key/value head, first the query heads that share it, then the key head, then the value
head. Module and weight names follow InternLM's remote code so that official checkpoints load
unchanged: ``model.tok_embeddings``, ``model.layers.N.{attention_norm, attention.wqkv,
attention.wo, ffn_norm, feed_forward.w1, feed_forward.w2, feed_forward.w3}``, ``model.norm``,
``output``.

It runs on transformers 4.48 (XTuner's pin) and 5.x: it inherits GenerationMixin explicitly
(from 4.50 PreTrainedModel no longer does), keeps its KV cache in a ``DynamicCache``, and takes
the cache under both of its names (``past_key_values`` in 4.x, ``cache`` in 5.x).
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import logging

from .configuration_internlm2 import InternLM2Config

logger = logging.get_logger(__name__)

# The output field that carries the KV cache: `past_key_values` up to transformers 4.x, `cache` in 5.x.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def resolve_attn_implementation(requested: str) -> str:
    """Map the config's attn_implementation to the two paths this file implements.

    "flash_attention_2" (which XTuner forces) is served by SDPA: PyTorch's SDPA already uses a
    FlashAttention kernel where the GPU has one, so the flash_attn package is not needed. When it
    is not even installed, warn (once per model built), so a log shows why no flash_attn kernel ran.
    """
    if requested != "flash_attention_2":
        return requested
    if importlib.util.find_spec("flash_attn") is None:
        logger.warning("flash_attention_2 was requested but flash_attn is not installed: using SDPA attention instead.")
    return "sdpa"


class InternLM2RMSNorm(nn.Module):
    """RMSNorm, computed in float32 for stability and cast back."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class InternLM2RotaryEmbedding(nn.Module):
    """cos/sin tables of rotary position embedding, with InternLM2's two rope_scaling options.

    "linear" divides positions by the factor. "dynamic" (NTK-aware, as InternLM2 and LMDeploy do
    it) leaves short sequences alone and, once a sequence of length L passes
    max_position_embeddings, raises the base to base * (factor * L / max_pos - (factor - 1)) **
    (dim / (dim - 2)). The frequencies are computed per call rather than kept in a buffer, so no
    loading path (meta device, transformers 5's lazy init) can leave them uninitialised.
    """

    def __init__(self, config: InternLM2Config) -> None:
        super().__init__()
        self.dim = config.hidden_size // config.num_attention_heads
        self.base = float(config.rope_theta)
        self.max_position_embeddings = config.max_position_embeddings
        scaling = config.rope_scaling or {}
        self.scaling_type = scaling.get("type")
        self.factor = scaling.get("factor", 1.0)

    def inv_freq(self, base: float, device: torch.device) -> torch.Tensor:
        exponents = torch.arange(0, self.dim, 2, dtype=torch.int64, device=device).float() / self.dim
        return 1.0 / (base**exponents)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids [B, T] -> cos, sin [B, T, head_dim] in ``dtype``."""
        positions = position_ids.float()
        base = self.base
        if self.scaling_type == "linear":
            positions = positions / self.factor
        elif self.scaling_type == "dynamic":
            seq_len = int(position_ids.max()) + 1
            if seq_len > self.max_position_embeddings:
                growth = self.factor * seq_len / self.max_position_embeddings - (self.factor - 1)
                base = self.base * growth ** (self.dim / (self.dim - 2))
        freqs = positions[..., None] * self.inv_freq(base, position_ids.device)  # [B, T, dim/2]
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [B, heads, T, d] and k [B, kv_heads, T, d] by their positions' angles."""
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def build_attention_mask(
    attention_mask: torch.Tensor | None, query_len: int, past_len: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """Additive mask [B or 1, 1, query_len, past_len + query_len]: 0 where a query may look.

    Combines causality with the padding mask ([B, past_len + query_len], 1 = real token). Masked
    entries get the dtype's lowest value rather than -inf, so a row with nothing to attend to (a
    left-padding query) stays finite in eager and SDPA alike. None when there is nothing to
    mask: one new token and no padding.
    """
    kv_len = past_len + query_len
    padded = attention_mask is not None and not bool(attention_mask.all())
    if query_len == 1 and not padded:
        return None
    key_pos = torch.arange(kv_len, device=device)
    query_pos = torch.arange(past_len, kv_len, device=device)
    allowed = (key_pos[None, :] <= query_pos[:, None])[None, None]
    if padded:
        if attention_mask.shape[-1] != kv_len:
            raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} tokens, expected {kv_len}")
        allowed = allowed & attention_mask[:, None, None, :].bool()
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


class InternLM2Attention(nn.Module):
    """Grouped-query attention with InternLM2's packed, per-group ``wqkv``.

    wqkv's output, viewed as [kv_heads, groups + 2, head_dim], holds for each KV head its
    ``groups`` query heads, then its key, then its value (InternLM2; LMDeploy splits it the same
    way). Query head ``h * groups + g`` therefore uses KV head ``h``.
    """

    def __init__(self, config: InternLM2Config, layer_idx: int, attn_implementation: str) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_implementation = attn_implementation
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.groups = self.num_heads // self.num_kv_heads
        self.head_dim = config.hidden_size // self.num_heads
        qkv_width = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.wqkv = nn.Linear(config.hidden_size, qkv_width, bias=config.bias)
        self.wo = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = x.shape
        qkv = self.wqkv(x).view(batch, length, self.num_kv_heads, self.groups + 2, self.head_dim)
        q = qkv[:, :, :, : self.groups].reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = qkv[:, :, :, -2].transpose(1, 2)  # [B, kv_heads, T, d]
        v = qkv[:, :, :, -1].transpose(1, 2)
        q, k = apply_rotary(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # now all past + new positions
        k = k.repeat_interleave(self.groups, dim=1)
        v = v.repeat_interleave(self.groups, dim=1)

        weights = None
        if self.attn_implementation == "sdpa" and not output_attentions:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:  # eager: the same computation written out (and the only path that can return weights)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
            out = weights @ v
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.wo(out), weights


class InternLM2MLP(nn.Module):
    """SwiGLU: w2(act(w1 x) * w3 x), no biases."""

    def __init__(self, config: InternLM2Config) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class InternLM2DecoderLayer(nn.Module):
    def __init__(self, config: InternLM2Config, layer_idx: int, attn_implementation: str) -> None:
        super().__init__()
        self.attention_norm = InternLM2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attention = InternLM2Attention(config, layer_idx, attn_implementation)
        self.ffn_norm = InternLM2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.feed_forward = InternLM2MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(self.attention_norm(x), cos, sin, mask, cache, output_attentions)
        x = x + attended
        return x + self.feed_forward(self.ffn_norm(x)), weights


class InternLM2PreTrainedModel(PreTrainedModel):
    config_class = InternLM2Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternLM2DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    # No `_supports_sdpa`: attention is chosen by InternLM2's own config field (see
    # InternLM2Config), so transformers' attn_implementation= argument is refused, not ignored.
    # transformers 4.48: lets generate() hand the model a DynamicCache (5.x always does).
    _supports_cache_class = True

    def _init_weights(self, module: nn.Module) -> None:
        # nn.init functions only: transformers 5 guards them so loaded weights are not overwritten.
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, InternLM2RMSNorm):
            nn.init.ones_(module.weight)


class InternLM2Model(InternLM2PreTrainedModel):
    """Embeddings, the decoder stack and the final norm (no LM head)."""

    def __init__(self, config: InternLM2Config) -> None:
        super().__init__(config)
        self.attn_implementation = resolve_attn_implementation(config.attn_implementation)
        # padding_idx as in InternLM2: the pad token's embedding gets no gradient.
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            InternLM2DecoderLayer(config, i, self.attn_implementation) for i in range(config.num_hidden_layers)
        )
        self.norm = InternLM2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = InternLM2RotaryEmbedding(config)
        # transformers' gradient_checkpointing_enable() sets this and `_gradient_checkpointing_func`.
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.tok_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the decoder over new tokens, attending to what the cache already holds.

        Give ``input_ids`` [B, T] or ``inputs_embeds`` [B, T, hidden]; ``attention_mask`` [B,
        past + T] marks real tokens (1) and padding (0). ``past_key_values`` (transformers 4.x) and
        ``cache`` (5.x) are the same thing: a Cache the new keys and values are appended to; one is
        created when use_cache is on and none is given. ``position_ids`` default to the positions
        following the cache. Other keyword arguments generate() passes (cache_position,
        logits_to_keep on 4.x...) are not needed here.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output_attentions = bool(output_attentions)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if self.gradient_checkpointing and self.training and use_cache:
            logger.warning_once("use_cache=True does not work with gradient checkpointing: turning the cache off.")
            use_cache = False

        x = self.tok_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        batch, length = x.shape[:2]
        kv_cache = (cache if cache is not None else past_key_values) if use_cache else None
        if use_cache and kv_cache is None:
            kv_cache = DynamicCache()
        past_len = kv_cache.get_seq_length() if kv_cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + length, device=x.device).expand(batch, -1)
        mask = build_attention_mask(attention_mask, length, past_len, x.dtype, x.device)
        cos, sin = self.rotary_emb(position_ids, x.dtype)

        all_hidden = () if output_hidden_states else None
        all_weights = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden += (x,)
            if self.gradient_checkpointing and self.training:
                x, weights = self._gradient_checkpointing_func(
                    layer.__call__, x, cos, sin, mask, None, output_attentions
                )
            else:
                x, weights = layer(x, cos, sin, mask, kv_cache, output_attentions)
            if output_attentions:
                all_weights += (weights,)
        x = self.norm(x)
        if output_hidden_states:
            all_hidden += (x,)  # as in transformers' own decoders, the last entry is after the final norm

        output = BaseModelOutputWithPast(
            last_hidden_state=x, hidden_states=all_hidden, attentions=all_weights, **{CACHE_FIELD: kv_cache}
        )
        return output if return_dict else output.to_tuple()


class InternLM2ForCausalLM(InternLM2PreTrainedModel, GenerationMixin):
    """InternLM2Model + the LM head ``output`` (untied from the embeddings, as in InternLM2)."""

    def __init__(self, config: InternLM2Config) -> None:
        if config.tie_word_embeddings:
            raise NotImplementedError("InternLM2 keeps separate input and output embeddings (tie_word_embeddings)")
        super().__init__(config)
        self.model = InternLM2Model(config)
        self.vocab_size = config.vocab_size
        self.output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.tok_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.output

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.output = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: Cache | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits (float32) for every position, or for the last ``logits_to_keep`` (generate on 5.x
        asks for 1). With ``labels`` [B, T] (-100 = ignore), also the next-token cross-entropy."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            cache=cache,
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.output(hidden).float()

        loss = None
        if labels is not None:
            shifted_logits = logits[:, :-1].reshape(-1, self.vocab_size)
            shifted_labels = labels[:, 1:].reshape(-1).to(logits.device)
            loss = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=-100)

        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
        return output if return_dict else output.to_tuple()
