"""Configuration of InternVLChatModel: a vision config, an LLM config and how they are joined.

Field names and defaults follow OpenGVLab's ``InternVLChatConfig`` (model_type "internvl_chat").
The LLM is named by ``llm_config["architectures"][0]``, as in OpenGVLab's checkpoints:
InternLM2 (InternVL2-2B, -8B, -26B and InternVL2.5's InternLM2.5 models) is the kit's own code;
Qwen2 (InternVL2-1B, InternVL2.5-1B/4B: Qwen2.5 keeps Qwen2's architecture), Phi-3 (InternVL2-4B)
and Llama (InternVL2-40B, -76B) are transformers' own classes, which load the same weight names.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from .configuration_intern_vit import InternVisionConfig
from .configuration_internlm2 import InternLM2Config

#: Where a model directory's config.json points transformers (the same entries as InternVL2-2B).
AUTO_MAP = {
    "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
    "AutoModel": "modeling_internvl_chat.InternVLChatModel",
    "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
}

#: The LLM architectures this code builds, and the transformers config class of each (None: the
#: kit's own InternLM2Config). Anything else is refused with this list.
LLM_ARCHITECTURES: dict[str, str | None] = {
    "InternLM2ForCausalLM": None,
    "Qwen2ForCausalLM": "Qwen2Config",
    "Phi3ForCausalLM": "Phi3Config",
    "LlamaForCausalLM": "LlamaConfig",
}

#: The code files a model directory must carry next to config.json for trust_remote_code.
MODEL_CODE_FILES = (
    "configuration_intern_vit.py",
    "configuration_internlm2.py",
    "configuration_internvl_chat.py",
    "modeling_intern_vit.py",
    "modeling_internlm2.py",
    "modeling_internvl_chat.py",
    "conversation.py",
)


class InternVLChatConfig(PretrainedConfig):
    """InternVL = InternViT + MLP projector (``mlp1``) + LLM.

    ``force_image_size`` is the tile size (448 for InternVL2); ``downsample_ratio`` is the pixel
    shuffle scale (0.5: four patches become one token); ``ps_version`` "v1" leaves the shuffled
    grid transposed, "v2" (InternVL2) puts it back; ``select_layer`` picks the ViT layer whose
    output is used (-1: the last); ``template`` names the conversation template of ``chat()``;
    ``dynamic_image_size``, ``use_thumbnail``, ``min/max_dynamic_patch`` describe the tiling the
    preprocessing applies. ``use_backbone_lora``/``use_llm_lora`` are kept for config
    compatibility and must be 0: this code never wraps LoRA itself (XTuner and peft do).
    ``img_context_token_id`` is the tokenizer's id of ``<IMG_CONTEXT>``, where the image tokens
    go: the kit writes it into the folders it makes, so the model knows it without a tokenizer;
    OpenGVLab's configs have no such field (None here), and the kit's loader fills it once from
    the tokenizer.
    """

    model_type = "internvl_chat"
    # Makes transformers 4.48 save both sub-configs in full (it would otherwise drop every value
    # equal to a default, and a config.json that omits fields is harder to read and to diff).
    is_composition = True

    def __init__(
        self,
        vision_config: dict[str, Any] | InternVisionConfig | None = None,
        llm_config: dict[str, Any] | InternLM2Config | None = None,
        use_backbone_lora: int = 0,
        use_llm_lora: int = 0,
        select_layer: int = -1,
        force_image_size: int | None = None,
        downsample_ratio: float = 0.5,
        template: str | None = None,
        dynamic_image_size: bool = False,
        use_thumbnail: bool = False,
        ps_version: str = "v1",
        min_dynamic_patch: int = 1,
        max_dynamic_patch: int = 6,
        img_context_token_id: int | None = None,
        auto_map: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        if use_backbone_lora or use_llm_lora:
            raise NotImplementedError("use_backbone_lora/use_llm_lora: wrap the model with peft instead")
        if ps_version not in ("v1", "v2"):
            raise ValueError(f"ps_version must be 'v1' or 'v2', got {ps_version!r}")
        self.vision_config = _as_config(InternVisionConfig, vision_config)
        self.llm_config = llm_config_for(llm_config)
        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.ps_version = ps_version
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.img_context_token_id = img_context_token_id
        self.auto_map = auto_map or dict(AUTO_MAP)
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Nest the two sub-configs as plain dicts, as InternVL2's config.json does."""
        output = super().to_dict()
        output["vision_config"] = self.vision_config.to_dict()
        output["llm_config"] = self.llm_config.to_dict()
        return output


def llm_architecture(llm_config: dict[str, Any] | PretrainedConfig | None) -> str:
    """The LLM's class name, ``architectures[0]`` (InternLM2 when a config names none)."""
    architectures = (llm_config.get("architectures") if isinstance(llm_config, dict)
                     else getattr(llm_config, "architectures", None)) or ["InternLM2ForCausalLM"]
    return architectures[0]


def llm_config_for(llm_config: dict[str, Any] | PretrainedConfig | None) -> PretrainedConfig:
    """The LLM's config object, of the class its architecture needs; unknown ones are refused."""
    architecture = llm_architecture(llm_config)
    if architecture not in LLM_ARCHITECTURES:
        raise NotImplementedError(f"llm_config.architectures[0] is {architecture!r}; this code builds "
                                  f"{', '.join(LLM_ARCHITECTURES)}")
    class_name = LLM_ARCHITECTURES[architecture]
    if class_name is None:
        config_class: type[PretrainedConfig] = InternLM2Config
    else:
        import transformers

        config_class = getattr(transformers, class_name)
    config = _as_config(config_class, llm_config)
    config.architectures = [architecture]
    return config


def _as_config(config_class: type[PretrainedConfig], value: Any) -> PretrainedConfig:
    if isinstance(value, config_class):
        return value
    return config_class(**(value or {}))
