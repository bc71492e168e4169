"""Configuration of InternViT, the vision encoder of InternVL.

Field names and defaults follow OpenGVLab's ``InternVisionConfig`` (model_type "intern_vit_6b";
the defaults describe InternViT-6B). InternVL2-2B uses InternViT-300M-448px, whose config.json
sets every field: hidden 1024, 24 layers, 16 heads, patch 14, image 448, intermediate 4096,
qkv_bias true, layer_norm, no q/k normalisation, initializer_factor 1.0.
"""

from __future__ import annotations

from transformers import PretrainedConfig


class InternVisionConfig(PretrainedConfig):
    """Sizes and options of an InternViT encoder.

    ``use_flash_attn`` is kept so that official config.json files round-trip; our encoder always
    calls PyTorch's scaled_dot_product_attention, which picks a fused kernel by itself.
    ``initializer_factor`` is the initial value of the layer-scale vectors ``ls1``/``ls2``.
    """

    model_type = "intern_vit_6b"

    def __init__(
        self,
        num_channels: int = 3,
        patch_size: int = 14,
        image_size: int = 224,
        qkv_bias: bool = False,
        hidden_size: int = 3200,
        num_attention_heads: int = 25,
        intermediate_size: int = 12800,
        qk_normalization: bool = True,
        num_hidden_layers: int = 48,
        use_flash_attn: bool = True,
        hidden_act: str = "gelu",
        norm_type: str = "rms_norm",
        layer_norm_eps: float = 1e-6,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        initializer_factor: float = 0.1,
        **kwargs,
    ) -> None:
        if norm_type not in ("rms_norm", "layer_norm"):
            raise ValueError(f"norm_type must be 'rms_norm' or 'layer_norm', got {norm_type!r}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by {num_attention_heads} heads")
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.qkv_bias = qkv_bias
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qk_normalization = qk_normalization
        self.num_hidden_layers = num_hidden_layers
        self.use_flash_attn = use_flash_attn
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor
        super().__init__(**kwargs)
