"""Lesson 1's examples: the generated data says what it claims, and each pattern does its job."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from internvl_course.lessons import patterns


@pytest.fixture(autouse=True)
def one_thread():
    """The models are tiny; on a shared 2-core machine one thread is several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def test_shapes_are_distinct_masks():
    masks = {s: patterns.shape_mask(s, 24, 12, 12, 8) for s in patterns.SHAPE_NAMES}
    assert all(m.sum() > 20 for m in masks.values())
    for a in patterns.SHAPE_NAMES:
        for b in patterns.SHAPE_NAMES:
            if a < b:
                assert (masks[a] != masks[b]).sum() > 10, (a, b)
    with pytest.raises(ValueError, match="unknown shape"):
        patterns.shape_mask("heart", 24, 12, 12, 8)


def test_picture_holds_the_named_colours():
    image = patterns.picture([("red", "circle"), ("blue", "square")], size=32, seed=1)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    present = patterns.colour_affinity(image[None]).amax((2, 3))[0]
    found = {name for name, score in zip(patterns.COLOUR_NAMES, present) if score > 0.2}
    assert found == {"red", "blue"}


def test_captioned_pictures_captions_match_labels_and_are_reproducible():
    data = patterns.captioned_pictures(64, seed=3)
    assert data.images.shape == (64, 3, 24, 24)
    for caption, colour, shape, ids in zip(data.captions, data.colours, data.shapes, data.token_ids):
        words = caption.split()
        assert patterns.COLOUR_NAMES[colour] in words and patterns.SHAPE_NAMES[shape] in words
        assert [patterns.VOCAB[i] for i in ids if i >= 0] == words
    assert data.classes.max() < 24
    again = patterns.captioned_pictures(64, seed=3)
    assert torch.equal(again.images, data.images) and again.captions == data.captions
    captions, ids = patterns.class_captions()
    assert len(captions) == 24 and ids.shape[0] == 24


def test_colour_questions_are_balanced_and_right():
    data = patterns.colour_questions(200, seed=0)
    assert 0.4 < data.answer.mean() < 0.6
    present = patterns.colour_affinity(data.images).amax((2, 3)) > 0.2  # [n, colours]: seen in any pixel
    assert (present.sum(1) == 2).all()  # two objects of two colours each time
    asked = present[torch.arange(200), data.question]
    assert torch.equal(asked.float(), data.answer)


def test_contrastive_loss_rewards_alignment():
    emb = F.normalize(torch.randn(16, 8), dim=-1)
    scale = torch.tensor(3.0)
    aligned = patterns.contrastive_loss(emb, emb, scale)
    shuffled = patterns.contrastive_loss(emb, emb.roll(1, 0), scale)
    assert aligned < shuffled
    logits = scale.exp() * emb @ emb.T
    expected = (F.cross_entropy(logits, torch.arange(16)) + F.cross_entropy(logits.T, torch.arange(16))) / 2
    torch.testing.assert_close(aligned, expected)


def test_clip_training_aligns_the_two_modalities():
    train, test = patterns.captioned_pictures(512, seed=0), patterns.captioned_pictures(128, seed=1)
    model = patterns.TinyCLIP()
    before = patterns.alignment(model, test)
    losses = patterns.train_clip(model, train, steps=80, batch_size=64, seed=0)
    after = patterns.alignment(model, test)
    assert losses[-1] < losses[0]
    assert after.gap > before.gap + 0.2 and after.retrieval > before.retrieval
    images_2d, texts_2d = patterns.embeddings_2d(model, test)
    assert images_2d.shape == (128, 2) and texts_2d.shape == (24, 2)
    assert patterns.class_similarity(model, test).shape == (24, 24)


def test_cross_modal_attention_weights_and_demo():
    attention = patterns.CrossModalAttention(text_dim=5, image_dim=7, dim=4)
    out, weights = attention(torch.randn(2, 3, 5), torch.randn(2, 10, 7))
    assert out.shape == (2, 3, 4) and weights.shape == (2, 3, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))
    scene = patterns.picture([("red", "circle"), ("blue", "square")], size=32, seed=0)
    weights, share = patterns.attention_demo(scene, ["red", "yellow"])
    assert weights.shape == (2, 8, 8) and share > 0.8
    assert weights[1].max() < 2 / 64  # nothing is yellow: attention spreads almost evenly


def test_hierarchy_levels_shrink():
    levels = patterns.TinyHierarchy()(patterns.picture([("green", "cross")], size=64)[None])
    assert levels["edges"].shape == (1, 64, 64)
    assert levels["regions"].shape == (1, len(patterns.PALETTE), 8, 8)
    assert levels["present"].argmax().item() == patterns.COLOUR_NAMES.index("green")
    assert not any(p.requires_grad for p in patterns.TinyHierarchy().parameters())


def test_joint_training_learns_both_heads():
    train, test = patterns.captioned_pictures(512, seed=0), patterns.captioned_pictures(128, seed=1)
    history = patterns.train_joint(patterns.JointModel(), train, test, steps=60, batch_size=64, every=20)
    assert history["step"] == [20, 40, 60]
    assert history["colour accuracy"][-1] > 0.8
    assert history["colour loss"][-1] < 1.0 and history["shape loss"][-1] < 1.4  # chance: 1.79 and 1.39


def test_late_fusion_is_additive_so_it_cannot_answer():
    """out(i, q) = a(i) + b(q): swapping questions between two pictures leaves the sum unchanged,
    so late fusion cannot represent "this colour is in this picture"; the others can."""
    data = patterns.colour_questions(2, seed=0)
    pictures, questions = data.images, torch.tensor([0, 3])
    for model_class, additive in [(patterns.LateFusion, True), (patterns.EarlyFusion, False),
                                  (patterns.IntermediateFusion, False)]:
        model = model_class()
        with torch.no_grad():
            same = model(pictures, questions).sum()
            swapped = model(pictures, questions.flip(0)).sum()
        assert torch.isclose(same, swapped, atol=1e-6).item() is additive, model_class.__name__


def test_fusion_training_early_learns_late_guesses():
    train, test = patterns.colour_questions(512, seed=0), patterns.colour_questions(256, seed=1)
    early = patterns.train_fusion(patterns.EarlyFusion(), train, test, steps=80, every=40)
    late = patterns.train_fusion(patterns.LateFusion(), train, test, steps=80, every=40)
    assert early["accuracy"][-1] > 0.8
    assert late["accuracy"][-1] < 0.7
