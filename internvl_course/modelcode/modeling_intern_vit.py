"""InternViT: the vision encoder of InternVL.

A plain pre-norm ViT with three InternVL touches: layer scale (each residual branch is
multiplied by a learned vector, ``ls1``/``ls2``), optional RMS normalisation of queries and keys
over all heads together (``attn.q_norm``/``attn.k_norm``, used by InternViT-6B), and a class token
whose output InternVL throws away. Module and weight names follow OpenGVLab's InternViT so that
official checkpoints load unchanged: ``embeddings.{class_embedding, patch_embedding,
position_embedding}`` and ``encoder.layers.N.{attn.qkv, attn.proj, attn.q_norm, attn.k_norm,
mlp.fc1, mlp.fc2, norm1, norm2, ls1, ls2}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling

from .configuration_intern_vit import InternVisionConfig
from .modeling_internlm2 import InternLM2RMSNorm as InternRMSNorm  # one RMSNorm for ViT and LLM


def make_norm(config: InternVisionConfig) -> nn.Module:
    """InternViT-6B uses RMSNorm, InternViT-300M uses LayerNorm (config ``norm_type``)."""
    if config.norm_type == "layer_norm":
        return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
    return InternRMSNorm(config.hidden_size, eps=config.layer_norm_eps)


class DropPath(nn.Module):
    """Stochastic depth: while training, drop a sample's whole residual branch with probability p."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class InternVisionEmbeddings(nn.Module):
    """Patch embedding + a class token + a learned position embedding.

    The position embedding is learned for one grid (image_size / patch_size squared); other image
    sizes get it resized with bicubic interpolation, as InternViT does.
    """

    def __init__(self, config: InternVisionConfig) -> None:
        super().__init__()
        self.embed_dim = config.hidden_size
        self.grid_size = config.image_size // config.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, self.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.position_embedding = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, self.embed_dim))

    def position_embedding_for(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a height x width patch grid: [1, 1 + height*width, dim]."""
        if (height, width) == (self.grid_size, self.grid_size):
            return self.position_embedding
        class_pos, patch_pos = self.position_embedding[:, :1], self.position_embedding[:, 1:]
        grid = patch_pos.float().reshape(1, self.grid_size, self.grid_size, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        patch_pos = grid.flatten(2).transpose(1, 2).to(patch_pos.dtype)
        return torch.cat([class_pos, patch_pos], dim=1)

    def embed_patches(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """[N, C, H, W] -> ([N, h*w, dim] row-major, h, w): ``patch_embedding`` applied patch by patch.

        A convolution whose stride equals its kernel is one matrix product over the cut-out
        patches; computed that way it gives the convolution's result (edge pixels beyond the
        last whole patch dropped, as the convolution drops them) and is far faster in bfloat16
        on a CPU (8 tiles: 7 ms instead of 50 ms), where XTuner runs the frozen ViT every step.
        """
        weight = self.patch_embedding.weight  # [dim, C, p, p]
        size = weight.shape[-1]
        n, channels = pixel_values.shape[:2]
        height, width = pixel_values.shape[2] // size, pixel_values.shape[3] // size
        pixels = pixel_values[:, :, :height * size, :width * size].to(weight.dtype)
        patches = pixels.reshape(n, channels, height, size, width, size).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(n, height * width, channels * size * size)
        return F.linear(patches, weight.flatten(1), self.patch_embedding.bias), height, width

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embedding.weight.dtype
        patches, height, width = self.embed_patches(pixel_values)
        n = patches.shape[0]
        class_token = self.class_embedding.expand(n, 1, -1).to(dtype)
        embeddings = torch.cat([class_token, patches], dim=1)
        return embeddings + self.position_embedding_for(height, width).to(dtype)


class InternAttention(nn.Module):
    """Bidirectional multi-head self-attention with one packed ``qkv`` projection.

    ``qkv`` outputs [all query heads | all key heads | all value heads]. With qk_normalization
    the queries and keys are RMS-normalised over the full width (all heads at once).
    """

    def __init__(self, config: InternVisionConfig) -> None:
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.attention_dropout = config.attention_dropout
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=config.qkv_bias)
        self.qk_normalization = config.qk_normalization
        if self.qk_normalization:
            self.q_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)
            self.k_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.proj_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, width).unbind(dim=2)
        if self.qk_normalization:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        dropout = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, tokens, width)
        return self.proj_drop(self.proj(out))


class InternMLP(nn.Module):
    def __init__(self, config: InternVisionConfig) -> None:
        super().__init__()
        self.act = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class InternVisionEncoderLayer(nn.Module):
    """Pre-norm block: x + drop_path(attn(norm1(x)) * ls1), then x + drop_path(mlp(norm2(x)) * ls2)."""

    def __init__(self, config: InternVisionConfig, drop_path_rate: float) -> None:
        super().__init__()
        self.attn = InternAttention(config)
        self.mlp = InternMLP(config)
        self.norm1 = make_norm(config)
        self.norm2 = make_norm(config)
        self.ls1 = nn.Parameter(config.initializer_factor * torch.ones(config.hidden_size))
        self.ls2 = nn.Parameter(config.initializer_factor * torch.ones(config.hidden_size))
        self.drop_path1 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.drop_path2 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)) * self.ls1)
        return x + self.drop_path2(self.mlp(self.norm2(x)) * self.ls2)


class InternVisionEncoder(nn.Module):
    def __init__(self, config: InternVisionConfig) -> None:
        super().__init__()
        # Stochastic depth grows linearly from 0 at the first layer to drop_path_rate at the last.
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.layers = nn.ModuleList(InternVisionEncoderLayer(config, rate) for rate in rates)
        # transformers' gradient_checkpointing_enable() sets this and `_gradient_checkpointing_func`.
        self.gradient_checkpointing = False

    def forward(self, inputs_embeds: torch.Tensor, output_hidden_states: bool = False) -> BaseModelOutput:
        """``hidden_states`` (when asked for) holds the embeddings and then every layer's output."""
        x = inputs_embeds
        hidden_states = (x,) if output_hidden_states else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = self._gradient_checkpointing_func(layer.__call__, x)
            else:
                x = layer(x)
            if output_hidden_states:
                hidden_states += (x,)
        return BaseModelOutput(last_hidden_state=x, hidden_states=hidden_states)


class InternVisionModel(PreTrainedModel):
    config_class = InternVisionConfig
    main_input_name = "pixel_values"
    _no_split_modules = ["InternVisionEncoderLayer"]
    supports_gradient_checkpointing = True

    def __init__(self, config: InternVisionConfig) -> None:
        super().__init__(config)
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = InternVisionEncoder(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # nn.init functions only: transformers 5 guards them so loaded weights are not overwritten.
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, InternRMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, InternVisionEmbeddings):
            nn.init.normal_(module.class_embedding, mean=0.0, std=std)
            nn.init.normal_(module.position_embedding, mean=0.0, std=std)
        elif isinstance(module, InternVisionEncoderLayer):
            nn.init.constant_(module.ls1, self.config.initializer_factor)
            nn.init.constant_(module.ls2, self.config.initializer_factor)

    def get_input_embeddings(self) -> InternVisionEmbeddings:
        return self.embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """pixel_values [N, 3, H, W] -> last_hidden_state [N, 1 + (H/patch)*(W/patch), hidden].

        Token 0 is the class token; ``pooler_output`` is its final state.
        """
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be [N, C, H, W], got shape {tuple(pixel_values.shape)}")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        encoded = self.encoder(self.embeddings(pixel_values), output_hidden_states=output_hidden_states)
        last = encoded.last_hidden_state
        output = BaseModelOutputWithPooling(
            last_hidden_state=last, pooler_output=last[:, 0], hidden_states=encoded.hidden_states
        )
        return output if return_dict else output.to_tuple()
