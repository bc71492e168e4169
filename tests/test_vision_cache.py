"""xtuner_launch.cache_vision_features: a frozen ViT's features, computed once per tile, exactly."""

from __future__ import annotations

import pytest
import torch

from internvl_course.finetune import presets
from internvl_course.finetune.launch import cache_vision_features


@pytest.fixture
def vision(tiny_model):
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_model, trust_remote_code=True).vision_model.eval()


def _tiles_encoded(vision) -> list[int]:
    """Rows the patch embedding sees per call: what the encoder really computes."""
    seen: list[int] = []
    vision.embeddings.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    return seen


def test_cached_features_are_the_encoders_own_and_computed_once(vision):
    torch.manual_seed(0)
    a, b, c = torch.randn(3, 1, 3, 448, 448)
    with torch.no_grad():
        expected = vision(pixel_values=torch.cat([a, b, c]), return_dict=True).last_hidden_state
    seen = _tiles_encoded(vision)
    cache = cache_vision_features(vision)

    first = vision(pixel_values=torch.cat([a, b, a]), return_dict=True).last_hidden_state
    assert seen == [2]  # a twice in one batch: encoded once
    second = vision(pixel_values=torch.cat([c, b, a]), return_dict=True)
    assert seen == [2, 1] and len(cache) == 3  # only c is new
    torch.testing.assert_close(first, expected[[0, 1, 0]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second.last_hidden_state, expected[[2, 1, 0]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second.pooler_output, expected[[2, 1, 0], 0], rtol=1e-5, atol=1e-5)


def test_a_middle_layer_is_computed_as_usual(vision):
    seen = _tiles_encoded(vision)
    cache = cache_vision_features(vision)
    out = vision(pixel_values=torch.zeros(2, 3, 448, 448), output_hidden_states=True, return_dict=True)
    assert seen == [2] and not cache and len(out.hidden_states) == vision.config.num_hidden_layers + 1


def test_the_cache_refuses_a_vision_encoder_that_trains(tmp_path, tiny_model):
    data = tmp_path / "data.json"
    data.write_text('[{"image": "0.jpg", "conversations": []}]')
    with pytest.raises(ValueError, match="cache_vision_features=True needs freeze_visual_encoder=True"):
        presets.settings_for("cpu-tiny", model_path=tiny_model, data_path=data, image_folder=tmp_path,
                              cache_vision_features=True, freeze_visual_encoder=False)


def test_an_encoder_with_dropout_is_refused(vision):
    vision.config.drop_path_rate = 0.1
    with pytest.raises(ValueError, match="drop_path_rate=0.1 .*set cache_vision_features=False"):
        cache_vision_features(vision)
