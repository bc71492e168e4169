"""InternVLChatModel: InternViT + the ``mlp1`` projector + an LLM, with InternVL's chat API.

How an image reaches the language model (InternVL2):

1. Each 448x448 tile goes through InternViT: 1 class token + 32x32 patch tokens of width 1024.
2. The class token is dropped and ``pixel_shuffle`` folds every 2x2 block of patches into one
   token four times as wide: 16x16 = 256 tokens of width 4096.
3. ``mlp1`` (LayerNorm, Linear, GELU, Linear) maps them to the LLM's width.
4. The prompt holds ``<img>`` + 256 x tiles ``<IMG_CONTEXT>`` placeholders + ``</img>``; the
   placeholders' embeddings are replaced by the image tokens and the LLM reads the sequence.

Weight names follow OpenGVLab's InternVLChatModel (``vision_model.*``, ``mlp1.{0,1,3}``,
``language_model.*``), so official InternVL2 and InternVL2.5 checkpoints load unchanged. The LLM
is InternLM2 (the kit's own code) or, for the other families, transformers' own Qwen2, Phi-3 or
Llama class, chosen by ``llm_config.architectures[0]`` as OpenGVLab's code chooses it. XTuner drives the
training path (``extract_feature``, ``language_model``, ``mlp1``, ``img_context_token_id``);
``chat``/``batch_chat`` are the official inference helpers. The id of ``<IMG_CONTEXT>`` lives in the
config (``img_context_token_id``), as the image token's id does in transformers' own InternVL.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_internvl_chat import InternVLChatConfig, llm_architecture
from .conversation import (IMAGE_MARKER, IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, expand_images,
                           get_conv_template)
from .modeling_intern_vit import InternVisionModel
from .modeling_internlm2 import InternLM2ForCausalLM, resolve_attn_implementation


def build_language_model(llm_config) -> PreTrainedModel:
    """The LLM ``llm_config`` names: the kit's InternLM2, or transformers' Qwen2/Phi-3/Llama.

    The native classes read transformers' private ``_attn_implementation``; "flash_attention_2"
    (what the released configs and XTuner ask for) becomes SDPA without the flash_attn package,
    as the kit's InternLM2 does, so a checkpoint loads on any machine.
    """
    architecture = llm_architecture(llm_config)
    if architecture == "InternLM2ForCausalLM":
        return InternLM2ForCausalLM(llm_config)
    import transformers

    requested = getattr(llm_config, "_attn_implementation", None) or "sdpa"
    llm_config._attn_implementation = resolve_attn_implementation(requested)
    return getattr(transformers, architecture)(llm_config)


def pixel_shuffle(x: torch.Tensor, scale_factor: float = 0.5, version: str = "v2") -> torch.Tensor:
    """Trade grid resolution for width: [N, W, H, C] -> [N, W*s, H*s, C/s^2].

    With s = 0.5 every 2x2 block of patch features becomes one feature four times as wide
    (InternVL2: 32x32x1024 -> 16x16x4096). The folding first merges neighbours along the second
    axis, swaps the two grid axes, then merges along the other one, which leaves the grid
    transposed: "v1" (InternVL 1.5) keeps it so, "v2" (InternVL2, LMDeploy) swaps it back.
    """
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3)
    x = x.reshape(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    if version == "v2":
        x = x.permute(0, 2, 1, 3)
    return x.contiguous()


class InternVLChatModel(PreTrainedModel):
    config_class = InternVLChatConfig
    main_input_name = "pixel_values"
    _no_split_modules = ["InternVisionModel", "InternLM2DecoderLayer", "Qwen2DecoderLayer", "Phi3DecoderLayer",
                         "LlamaDecoderLayer"]
    supports_gradient_checkpointing = True

    def __init__(
        self,
        config: InternVLChatConfig,
        vision_model: InternVisionModel | None = None,
        language_model: PreTrainedModel | None = None,
        use_flash_attn: bool | None = None,
    ) -> None:
        """``use_flash_attn`` is the switch the model cards pass to from_pretrained; without the
        flash_attn package the LLM falls back to SDPA (see modeling_internlm2)."""
        if use_flash_attn is not None:
            config.vision_config.use_flash_attn = use_flash_attn
            attn = "flash_attention_2" if use_flash_attn else "eager"
            if llm_architecture(config.llm_config) == "InternLM2ForCausalLM":
                config.llm_config.attn_implementation = attn
            else:
                config.llm_config._attn_implementation = attn
        super().__init__(config)
        image_size = config.force_image_size or config.vision_config.image_size
        self.patch_size = config.vision_config.patch_size
        self.select_layer = config.select_layer
        self.template = config.template
        self.downsample_ratio = config.downsample_ratio
        self.ps_version = config.ps_version
        # InternVL2-2B: (448 / 14)^2 * 0.5^2 = 256 tokens per tile.
        self.num_image_token = int((image_size // self.patch_size) ** 2 * config.downsample_ratio**2)

        self.vision_model = vision_model if vision_model is not None else InternVisionModel(config.vision_config)
        self.language_model = language_model if language_model is not None else build_language_model(config.llm_config)
        vit_width = config.vision_config.hidden_size * int(1 / config.downsample_ratio) ** 2
        llm_width = config.llm_config.hidden_size
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(vit_width), nn.Linear(vit_width, llm_width), nn.GELU(), nn.Linear(llm_width, llm_width)
        )

        # chat() puts this in the system turn; change it to change the assistant's persona. A
        # fine-tuned model's config may name the one it was trained with (the official configs
        # carry no such field, so theirs is the template's).
        default = get_conv_template(self.template).system_message if self.template else None
        self.system_message = getattr(config, "system_message", None) or default
        self.post_init()

    @property
    def img_context_token_id(self) -> int | None:
        """The id of ``<IMG_CONTEXT>``, whose embeddings the image tokens replace: the config's.

        The kit's folders store it in config.json; an official config names none, so the kit's
        loader fills it from the tokenizer once, ``chat()`` does when nothing has, and XTuner
        assigns it itself (``model.img_context_token_id = ...``), which lands in the config too.
        """
        return self.config.img_context_token_id

    @img_context_token_id.setter
    def img_context_token_id(self, value: int | None) -> None:
        self.config.img_context_token_id = value

    def _init_weights(self, module: nn.Module) -> None:
        # The two towers initialise their own modules in their own post_init; this is for mlp1.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.llm_config.initializer_range)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def pixel_shuffle(self, x: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
        """The module-level ``pixel_shuffle`` with this model's ``ps_version`` (InternVL's method)."""
        return pixel_shuffle(x, scale_factor, self.ps_version)

    def extract_feature(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tiles [N, 3, S, S] -> image tokens [N, num_image_token, llm_hidden]."""
        use_last = self.select_layer == -1
        vision = self.vision_model(pixel_values=pixel_values, output_hidden_states=not use_last, return_dict=True)
        features = vision.last_hidden_state if use_last else vision.hidden_states[self.select_layer]
        features = features[:, 1:]  # drop the class token
        n, tokens, width = features.shape
        side = int(tokens**0.5)
        features = self.pixel_shuffle(features.reshape(n, side, side, width), self.downsample_ratio)
        features = features.reshape(n, -1, features.shape[-1])
        return self.mlp1(features)

    def merge_image_features(
        self, inputs_embeds: torch.Tensor, input_ids: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Put the image tokens, in order, where the ``<IMG_CONTEXT>`` placeholders are."""
        if self.img_context_token_id is None:
            raise ValueError("the model does not know the id of <IMG_CONTEXT>: config.img_context_token_id is None. "
                             "Load the folder with internvl_course.model.load.load_model, or set "
                             "model.img_context_token_id = tokenizer.convert_tokens_to_ids('<IMG_CONTEXT>')")
        selected = input_ids == self.img_context_token_id
        features = image_features.reshape(-1, inputs_embeds.shape[-1]).to(inputs_embeds.dtype)
        if int(selected.sum()) != features.shape[0]:
            raise ValueError(
                f"the prompt has {int(selected.sum())} <IMG_CONTEXT> tokens but the images give "
                f"{features.shape[0]} features (num_image_token={self.num_image_token} per tile)"
            )
        return inputs_embeds.masked_scatter(selected[..., None], features)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        image_flags: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithPast | tuple:
        """Training forward: logits (and the next-token loss when ``labels`` are given).

        ``pixel_values`` holds every tile of the batch; ``image_flags`` [N] or [N, 1] marks real
        tiles (1) and the dummy tiles of text-only samples (0), whose features are dropped.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        inputs_embeds = self.language_model.get_input_embeddings()(input_ids)
        image_features = self.extract_feature(pixel_values)
        if image_flags is not None:
            image_features = image_features[image_flags.reshape(-1) == 1]
        inputs_embeds = self.merge_image_features(inputs_embeds, input_ids, image_features)
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        return outputs if return_dict else outputs.to_tuple()

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Generate from a prompt whose ``<IMG_CONTEXT>`` placeholders stand for ``pixel_values``.

        The LLM generates from embeddings, so the result holds only the new tokens. Any argument
        of transformers' generate (generation_config, max_new_tokens, do_sample...) passes through.
        """
        inputs_embeds = self.language_model.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            image_features = self.extract_feature(pixel_values.to(self.vision_model.device))
            inputs_embeds = self.merge_image_features(inputs_embeds, input_ids, image_features)
        generate_kwargs.setdefault("use_cache", True)
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs
        )

    def chat(
        self,
        tokenizer,
        pixel_values: torch.Tensor | None,
        question: str,
        generation_config: dict,
        history: list[tuple[str, str]] | None = None,
        return_history: bool = False,
        num_patches_list: list[int] | None = None,
        IMG_START_TOKEN: str = IMG_START_TOKEN,
        IMG_END_TOKEN: str = IMG_END_TOKEN,
        IMG_CONTEXT_TOKEN: str = IMG_CONTEXT_TOKEN,
        verbose: bool = False,
    ) -> str | tuple[str, list[tuple[str, str]]]:
        """Answer ``question`` about the tiles in ``pixel_values``, as InternVL's model.chat does.

        The first turn gets ``<image>\\n`` in front when it names no image; each ``<image>`` in
        the conversation (earlier turns included, so pass the same pixel_values with history)
        becomes ``<img>`` + ``<IMG_CONTEXT>`` x (num_image_token x tiles) + ``</img>``.
        ``num_patches_list`` gives the tiles per image when pixel_values holds several images.
        ``generation_config`` is a dict of generate() arguments, e.g. dict(max_new_tokens=64,
        do_sample=False). With ``return_history`` the history including this turn comes back too.
        """
        if num_patches_list is None:
            num_patches_list = [pixel_values.shape[0]] if pixel_values is not None else []
        if pixel_values is not None and sum(num_patches_list) != pixel_values.shape[0]:
            raise ValueError(f"num_patches_list {num_patches_list} does not add up to {pixel_values.shape[0]} tiles")
        image_tokens = (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN)
        question, query, stop_token = self._prompt(tokenizer, question, history, num_patches_list, image_tokens)

        inputs = tokenizer(query, return_tensors="pt")
        response = self._generate_replies(tokenizer, inputs, pixel_values, generation_config, stop_token)[0]
        history = list(history or []) + [(question, response)]
        if verbose:
            shown = query.replace(IMG_CONTEXT_TOKEN, "").replace(IMG_START_TOKEN + IMG_END_TOKEN, IMAGE_MARKER)
            print(shown + response)
        return (response, history) if return_history else response

    def batch_chat(
        self,
        tokenizer,
        pixel_values: torch.Tensor | None,
        questions: list[str],
        generation_config: dict,
        num_patches_list: list[int] | None = None,
        IMG_START_TOKEN: str = IMG_START_TOKEN,
        IMG_END_TOKEN: str = IMG_END_TOKEN,
        IMG_CONTEXT_TOKEN: str = IMG_CONTEXT_TOKEN,
    ) -> list[str]:
        """One single-turn question per image, answered in one left-padded batch.

        ``num_patches_list[i]`` is the number of tiles of question i's image; the tiles of all
        images are concatenated in ``pixel_values`` in the same order. No questions, no replies.
        """
        if not questions:
            return []
        if pixel_values is None:
            num_patches_list = [0] * len(questions)
        elif num_patches_list is None or sum(num_patches_list) != pixel_values.shape[0]:
            raise ValueError("give num_patches_list: the tiles of each question's image, adding up to pixel_values")
        image_tokens = (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN)
        queries = []
        for question, num_patches in zip(questions, num_patches_list, strict=True):
            _, query, stop_token = self._prompt(tokenizer, question, None, [num_patches] if num_patches else [],
                                                image_tokens)
            queries.append(query)

        # Left padding keeps every prompt's last token at the end, where generation continues.
        padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            inputs = tokenizer(queries, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = padding_side
        return self._generate_replies(tokenizer, inputs, pixel_values, generation_config, stop_token)

    def adopt_image_token_id(self, tokenizer, context: str = IMG_CONTEXT_TOKEN) -> None:
        """Take the tokenizer's id of ``context`` when the config names none (an official download);
        refuse a different one, which would leave every placeholder unfound."""
        context_id = tokenizer.convert_tokens_to_ids(context)
        if self.img_context_token_id is None:
            self.img_context_token_id = context_id
        elif self.img_context_token_id != context_id:
            raise ValueError(f"img_context_token_id is {self.img_context_token_id}, but the tokenizer gives {context} "
                             f"the id {context_id}: use the tokenizer of this model's folder")

    def _prompt(self, tokenizer, question: str, history: list[tuple[str, str]] | None, num_patches_list: list[int],
                image_tokens: tuple[str, str, str]) -> tuple[str, str, str]:
        """One turn as ``chat`` and ``batch_chat`` prompt it: (the question as asked, the prompt text,
        the template's stop token).

        A first turn (``history`` None) with pictures gets ``<image>\\n`` in front unless it places
        ``<image>`` itself; the template's system message, the earlier turns and the question
        follow, and each picture's ``<image>`` is expanded. ``image_tokens`` are the start, end
        and context tokens chat() was given; with pictures, the context token's id becomes the
        model's when the config names none, and must equal it otherwise, or no placeholder would
        be found.
        """
        start, end, context = image_tokens
        if num_patches_list:
            self.adopt_image_token_id(tokenizer, context)
            if history is None and IMAGE_MARKER not in question:
                question = IMAGE_MARKER + "\n" + question
        template = get_conv_template(self.template)
        template.system_message = self.system_message
        for old_question, old_answer in history or []:
            template.append_message(template.roles[0], old_question)
            template.append_message(template.roles[1], old_answer)
        template.append_message(template.roles[0], question)
        template.append_message(template.roles[1], None)
        query = expand_images(template.get_prompt(), num_patches_list, self.num_image_token, start, end, context)
        return question, query, template.stop_token

    def _generate_replies(
        self, tokenizer, inputs, pixel_values: torch.Tensor | None, generation_config: dict, stop_token: str
    ) -> list[str]:
        """Generate until the template's end-of-turn token and decode each reply up to it."""
        generate_kwargs = dict(generation_config)
        generate_kwargs["eos_token_id"] = tokenizer.convert_tokens_to_ids(stop_token)
        device = self.language_model.get_input_embeddings().weight.device
        output_ids = self.generate(
            pixel_values=pixel_values,
            input_ids=inputs["input_ids"].to(device),
            attention_mask=inputs["attention_mask"].to(device),
            **generate_kwargs,
        )
        replies = tokenizer.batch_decode(output_ids, skip_special_tokens=True)
        return [reply.split(stop_token)[0].strip() for reply in replies]
