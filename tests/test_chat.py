"""internvl_course.serve.chat: backend choice, generation settings, multi-turn sessions, streaming."""

from __future__ import annotations

import pytest
import torch

from internvl_course.serve import chat
from internvl_course.serve.chat import GenerationConfig
from internvl_course.data.drawing import Piece, Scene, render


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return chat.pipeline(tiny_model, quiet=True)


@pytest.fixture(scope="module")
def picture():
    return render(Scene(pieces=(Piece("circle", "red", 2),)), seed=3)


def test_auto_backend_says_why(tiny_model, capsys):
    p = chat.pipeline(tiny_model)
    if torch.cuda.is_available():
        assert p.backend in ("pytorch", "turbomind")
    else:
        assert (p.backend, p.reason) == ("transformers", "no CUDA GPU: using transformers")
        assert "no CUDA GPU: using transformers" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusals")
@pytest.mark.parametrize("backend", ["lmdeploy", "pytorch", "turbomind"])
def test_lmdeploy_backends_refuse_a_cpu_with_a_fix(backend):
    with pytest.raises(RuntimeError, match="needs a CUDA GPU .* Use backend='transformers' or 'auto'"):
        chat.choose_backend(backend)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'vllm'"):
        chat.choose_backend("vllm")
    with pytest.raises(ValueError, match="holds no config.json, so it is not a model folder"):
        chat.pipeline(tmp_path)
    for bad, message in [({"top_p": 0}, "top_p must be in \\(0, 1\\]"), ({"temperature": -1}, "temperature must be >= 0"),
                         ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"), ({"top_k": -2}, "top_k")]:
        with pytest.raises(ValueError, match=message):
            GenerationConfig(**bad)


def test_temperature_decides_sampling_in_every_backend():
    greedy, sampled = GenerationConfig(), GenerationConfig(temperature=0.7, top_p=0.8, top_k=40, seed=1)
    assert greedy.for_transformers() == {"max_new_tokens": 256, "do_sample": False, "repetition_penalty": 1.0}
    assert sampled.for_transformers()["do_sample"] is True and sampled.for_transformers()["top_p"] == 0.8
    lmdeploy = pytest.importorskip("lmdeploy")  # noqa: F841
    assert greedy.for_lmdeploy().do_sample is False
    lmd = sampled.for_lmdeploy()
    assert (lmd.do_sample, lmd.temperature, lmd.top_p, lmd.top_k, lmd.random_seed) == (True, 0.7, 0.8, 40, 1)


def test_ignore_eos_generates_exactly_max_new_tokens(pipe, picture):
    """What the throughput benchmarks rely on: a fixed amount of work whatever the weights say."""
    config = GenerationConfig(max_new_tokens=12, ignore_eos=True)
    assert config.for_transformers()["min_new_tokens"] == 12
    assert "min_new_tokens" not in GenerationConfig(max_new_tokens=12).for_transformers()
    reply = pipe.chat(("你好", picture), gen_config=config).response
    assert (reply.generate_token_len, reply.finish_reason) == (12, "length")
    pytest.importorskip("lmdeploy")
    assert config.for_lmdeploy().ignore_eos is True and GenerationConfig().for_lmdeploy().ignore_eos is False


def test_multi_turn_chat_keeps_the_conversation(pipe, picture):
    config = GenerationConfig(max_new_tokens=6)
    session = pipe.chat(("请描述这张图片。", picture), gen_config=config)
    first = session.response.text
    session = pipe.chat("What colour is the plate?", session=session, gen_config=config)
    assert [q for q, _ in session.history] == ["请描述这张图片。", "What colour is the plate?"]
    assert session.history[0][1] == first
    assert 1 <= session.response.generate_token_len <= 6
    # The second turn saw the picture and the first exchange: the model's own history holds both.
    assert session.backend_state[0][0].startswith("<image>\n")
    with pytest.raises(ValueError, match="a picture can only start a conversation"):
        pipe.chat(("another picture", picture), session=session)
    pipe.end(session)
    assert session.history == [] and session.backend_state is None


def test_greedy_is_repeatable_and_the_seed_repeats_sampling(pipe, picture):
    greedy = GenerationConfig(max_new_tokens=8)
    assert pipe.chat(("Describe.", picture), gen_config=greedy).response.text == \
        pipe.chat(("Describe.", picture), gen_config=greedy).response.text
    seeded = GenerationConfig(max_new_tokens=8, temperature=1.0, seed=5)
    assert pipe.chat(("Describe.", picture), gen_config=seeded).response.text == \
        pipe.chat(("Describe.", picture), gen_config=seeded).response.text


def test_streaming_ends_with_the_whole_reply_and_stops_when_dropped(pipe, picture):
    config = GenerationConfig(max_new_tokens=8)
    outputs = list(pipe.stream_chat(("Describe.", picture), gen_config=config))
    text, session = outputs[-1]
    assert text == session.response.text and len(session.history) == 1
    stream = pipe.stream_chat(("Describe.", picture), gen_config=GenerationConfig(max_new_tokens=500))
    next(stream)
    stream.close()  # the reader went away: generation stops and the model is free again
    assert pipe._lock.acquire(timeout=5)
    pipe._lock.release()


def test_batch_answers_each_question_on_its_own(pipe, picture):
    replies = pipe.batch([("Describe.", picture), "你好"], gen_config=GenerationConfig(max_new_tokens=4))
    assert len(replies) == 2 and all(isinstance(r.text, str) for r in replies)


def test_dtype_is_validated_and_honoured(tiny_model):
    from internvl_course.serve.chat import pipeline

    with pytest.raises(ValueError, match="dtype must be one of auto, float32, float16, bfloat16, got 'fp8'"):
        pipeline(tiny_model, backend="transformers", dtype="fp8", quiet=True)
    pipe = pipeline(tiny_model, backend="transformers", dtype="bfloat16", quiet=True)
    assert next(pipe.model.parameters()).dtype.__repr__() == "torch.bfloat16"
    pipe.close()
