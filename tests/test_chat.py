"""internvl_course.serve.chat: backend choice, generation settings, multi-turn sessions, streaming."""

from __future__ import annotations

import os
import subprocess
import sys

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


def lmdeploy_pipe_stub(model_path, tp: int) -> chat.ChatPipeline:
    """A ChatPipeline about to load LMDeploy, without __init__'s checks (there is no GPU here)."""
    pipe = object.__new__(chat.ChatPipeline)
    pipe.__dict__.update(model_path=model_path, backend="pytorch", tp=tp, dtype="auto", session_len=4096,
                         trust_remote_code=True)  # LMDeploy gets the folder as it is: no prepared copy
    return pipe


def test_choosing_a_gpu_backend_starts_no_process(monkeypatch):
    """The choice is made on every pipeline(): a cheap look in this process, not a 120 s child."""
    pytest.importorskip("lmdeploy")

    def refuse(*args, **kwargs):
        raise AssertionError(f"choose_backend started a process: {args[:1]}")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "a test GPU")
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    backend, reason = chat.choose_backend("auto")
    loads, why = chat.turbomind_loads()
    assert backend == ("turbomind" if loads else "pytorch")
    assert reason == ("CUDA GPU (a test GPU): using LMDeploy TurboMind" if loads
                      else f"CUDA GPU, but TurboMind {why}: using LMDeploy's PyTorch engine")
    assert chat.choose_backend("pytorch") == ("pytorch", "LMDeploy PyTorch engine requested")


def test_a_wheel_without_turbomind_says_so(monkeypatch):
    import importlib

    def absent(name: str):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(importlib, "import_module", absent)
    assert chat.turbomind_loads() == (False, "is not in this lmdeploy build")


def test_tensor_parallel_loading_leaves_the_environment_as_it_was(tiny_model, monkeypatch):
    """LMDeploy's workers start with NVLink multicast off; the caller's os.environ is unchanged after."""
    lmdeploy = pytest.importorskip("lmdeploy")
    from internvl_course import device

    seen: dict[str, str | None] = {}

    def fake_pipeline(path: str, **kwargs):
        seen.update({name: os.environ.get(name) for name in device.MULTICAST_OFF})
        return object()

    monkeypatch.setattr(lmdeploy, "pipeline", fake_pipeline)
    monkeypatch.setattr(device, "check_gpu_count", lambda wanted, what: None)
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")  # the caller's own value comes back afterwards
    monkeypatch.delenv("TORCH_SYMM_MEM_DISABLE_MULTICAST", raising=False)
    before = dict(os.environ)
    lmdeploy_pipe_stub(tiny_model, tp=2)._load_lmdeploy()
    assert seen == device.MULTICAST_OFF, "LMDeploy starts its workers while multicast is off"
    assert dict(os.environ) == before


def test_nothing_patches_asyncio(tiny_model):
    """Importing the serving modules, or loading LMDeploy inside a running event loop (a notebook),
    leaves asyncio as it is: LMDeploy 0.18 runs its engine on its own loop thread."""
    pytest.importorskip("lmdeploy")
    script = f"""
import asyncio
before = (asyncio.run, asyncio.get_event_loop, asyncio.Task, type(asyncio.get_event_loop_policy()).get_event_loop)

import lmdeploy
import internvl_course.course.notebook, internvl_course.serve.chat, internvl_course.serve.demo
from internvl_course.serve.chat import ChatPipeline

lmdeploy.pipeline = lambda path, **kwargs: object()
pipe = object.__new__(ChatPipeline)
pipe.__dict__.update(model_path={str(tiny_model)!r}, backend="pytorch", tp=1, dtype="auto", session_len=4096,
                     trust_remote_code=True)


async def in_a_notebook():
    pipe._load_lmdeploy()
    return hasattr(asyncio.get_running_loop(), "_nest_patched")


loop_patched = asyncio.run(in_a_notebook())
after = (asyncio.run, asyncio.get_event_loop, asyncio.Task, type(asyncio.get_event_loop_policy()).get_event_loop)
print(after == before, hasattr(asyncio, "_nest_patched"), loop_patched)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["True", "False", "False"], "asyncio was patched"


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


def test_streaming_ends_with_the_whole_reply_and_stops_when_dropped(pipe, picture, monkeypatch):
    config = GenerationConfig(max_new_tokens=8)
    outputs = list(pipe.stream_chat(("Describe.", picture), gen_config=config))
    text, session = outputs[-1]
    assert text == session.response.text and len(session.history) == 1

    controls: list[chat.TurnControl] = []

    class RecordedControl(chat.TurnControl):
        def __init__(self) -> None:
            super().__init__()
            controls.append(self)

    monkeypatch.setattr(chat, "TurnControl", RecordedControl)
    stream = pipe.stream_chat(("Describe.", picture), gen_config=GenerationConfig(max_new_tokens=500))
    next(stream)
    stream.close()  # the reader went away: generation is told to stop and has ended when close() returns
    [control] = controls
    assert control._cancelled.is_set(), "closing the stream must cancel the generation"
    assert pipe._lock.acquire(blocking=False), "the model must be free as soon as close() returns"
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
