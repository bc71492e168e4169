"""One API for multi-turn image chat, over LMDeploy on a GPU and transformers anywhere.

Shaped like LMDeploy's pipeline, so what a student learns here is what LMDeploy does::

    pipe = pipeline(model_path)                      # says which backend it chose and why
    sess = pipe.chat(("What is on the plate?", image), gen_config=GenerationConfig(temperature=0.7))
    print(sess.response.text)
    sess = pipe.chat("And what colour is it?", session=sess)

Backends:

- ``"transformers"``: the kit's own InternVL code (``model.chat``), CPU or GPU;
- ``"pytorch"``: LMDeploy's PyTorch engine (needs a CUDA GPU);
- ``"turbomind"``: LMDeploy's TurboMind engine (needs a CUDA GPU and its CUDA 12 libraries);
- ``"lmdeploy"``: TurboMind where it loads, else the PyTorch engine;
- ``"auto"``: ``"lmdeploy"`` on a CUDA machine, ``"transformers"`` otherwise.

Every backend loads the model folder through ``internvl_course.model``: the folder is checked
first, then the kit's code runs, never the folder's own Python (LMDeploy gets a prepared folder
with the kit's code beside the checkpoint's linked weights), unless ``trust_remote_code=True``.

Every backend builds InternVL's prompt (picture first, then the question) from the model's own
template, so the same question gets the same prompt ids everywhere, and the same
``GenerationConfig`` means the same thing everywhere: a temperature above 0 samples, 0 is greedy
(LMDeploy ignores temperature and top_p unless ``do_sample`` is set: docs/design.md, "LMDeploy").

Every turn is measured before the model runs, on every backend: the prompt's tokens (template,
earlier turns, the picture's tiles, the question) against ``session_len``, the context, which is
the model's own maximum unless asked for less. A turn that does not fit raises
``PromptTooLongError`` with the numbers and the ways out; one that fits gets at most the room that
is left for its reply.
"""

from __future__ import annotations

import math
import numbers
import threading
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from internvl_course.model.preprocess import ImageSource
from internvl_course.paths import environment

BACKENDS = ("auto", "transformers", "lmdeploy", "pytorch", "turbomind")


@dataclass(frozen=True)
class GenerationConfig:
    """Generation settings every backend understands the same way.

    ``temperature`` 0 means greedy decoding; above 0 it samples, with ``top_p`` (nucleus, in
    (0, 1]) and ``top_k`` (0: no limit). ``seed`` makes sampling repeatable. ``ignore_eos``
    generates exactly ``max_new_tokens`` whatever the model says: benchmarks need a fixed amount
    of work, and a model with random weights would otherwise stop at an arbitrary point.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        """Check every field where the config is written, and store whole numbers given for the
        float fields as floats: transformers refuses ``temperature=2`` fourteen frames deep inside
        generate, and a NaN temperature would quietly decode greedily."""

        def number(value: Any) -> bool:
            return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

        def whole(value: Any) -> bool:
            return isinstance(value, numbers.Integral) and not isinstance(value, bool)

        checks: tuple[tuple[str, bool, str], ...] = (
            ("max_new_tokens", whole(self.max_new_tokens) and self.max_new_tokens >= 1, "at least 1 (a whole number)"),
            ("temperature", number(self.temperature) and self.temperature >= 0, ">= 0 and finite (0 = greedy)"),
            ("top_p", number(self.top_p) and 0 < self.top_p <= 1, "in (0, 1] (1 keeps every token)"),
            ("top_k", whole(self.top_k) and self.top_k >= 0, ">= 0 (a whole number; 0 = no limit)"),
            ("repetition_penalty", number(self.repetition_penalty) and self.repetition_penalty > 0,
             "> 0 and finite (1 = none)"),
            ("seed", self.seed is None or (whole(self.seed) and self.seed >= 0), "None or a whole number >= 0"),
            ("ignore_eos", isinstance(self.ignore_eos, bool), "True or False"),
        )
        for name, valid, allowed in checks:
            if not valid:
                raise ValueError(f"GenerationConfig: {name} must be {allowed}, got {getattr(self, name)!r}")
        for name in ("temperature", "top_p", "repetition_penalty"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("max_new_tokens", "top_k") + (("seed",) if self.seed is not None else ()):
            object.__setattr__(self, name, int(getattr(self, name)))

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def for_transformers(self) -> dict[str, Any]:
        """Arguments of transformers' generate; sampling knobs only when sampling (else it warns)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                                  "repetition_penalty": self.repetition_penalty}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        if self.ignore_eos:  # the stop token is masked out until max_new_tokens are generated
            kwargs["min_new_tokens"] = self.max_new_tokens
        return kwargs

    def for_lmdeploy(self):
        """LMDeploy's GenerationConfig, with do_sample set explicitly (its default is False)."""
        from lmdeploy import GenerationConfig as LMDeployGenerationConfig

        return LMDeployGenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                        temperature=self.temperature if self.do_sample else 1.0,
                                        top_p=self.top_p, top_k=self.top_k if self.do_sample else 1,
                                        repetition_penalty=self.repetition_penalty, random_seed=self.seed,
                                        ignore_eos=self.ignore_eos)


class PromptTooLongError(ValueError):
    """A turn that does not fit the context: the message gives the numbers and the ways out."""


@dataclass
class Response:
    text: str
    generate_token_len: int = 0
    finish_reason: str | None = None


@dataclass
class Session:
    """One conversation: its picture, its turns so far, and the last response."""

    image: Any = None  # the picture of the first turn (a PIL image), kept for later turns
    history: list[tuple[str, str]] = field(default_factory=list)
    response: Response | None = None
    # The backend's own record of the conversation: model.chat's history (whose first question
    # carries the "<image>" marker) for transformers, LMDeploy's Session for LMDeploy.
    backend_state: Any = None


class TurnControl:
    """Counts the tokens a transformers generation produces and lets another thread stop it.

    Passed to generate() as a stopping criterion: it sees every step, so the count is the ids
    really generated (not the reply re-encoded), and ``cancel()`` ends the generation at the next
    token, e.g. when a demo user starts over while an answer is still streaming.
    """

    def __init__(self) -> None:
        self.generated = 0
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.generated = int(input_ids.shape[-1])  # generating from embeddings: only new ids
        return torch.full((input_ids.shape[0],), self._cancelled.is_set(), dtype=torch.bool, device=input_ids.device)


def turbomind_loads() -> tuple[bool, str]:
    """Whether LMDeploy's TurboMind engine loads in this process, and if not, why, phrased to
    follow the word "TurboMind".

    TurboMind is a compiled extension that needs CUDA 12 libraries. Importing it is the whole
    check: it takes a second, it is the first thing the engine does anyway, and a failure names
    the missing library. A wheel with the library cut out (README, "Offline install") has no
    extension to import at all.
    """
    import importlib

    extension = "lmdeploy.turbomind._turbomind"
    try:
        importlib.import_module(extension)
    except (ImportError, OSError) as err:
        if isinstance(err, ModuleNotFoundError) and err.name == extension:
            return False, "is not in this lmdeploy build"
        return False, f"does not load here ({err})"
    return True, "loads"


def choose_backend(requested: str = "auto") -> tuple[str, str]:
    """(backend, reason). ``requested`` is one of BACKENDS; impossible requests raise with a fix."""
    import torch

    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    cuda = torch.cuda.is_available()
    if requested == "transformers":
        return "transformers", "transformers backend requested"
    if not cuda:
        if requested != "auto":
            raise RuntimeError(f"backend {requested!r} needs a CUDA GPU (LMDeploy's engines run only on GPUs) "
                               "and torch sees none here. Use backend='transformers' or 'auto'.")
        return "transformers", "no CUDA GPU: using transformers"
    try:
        import lmdeploy  # noqa: F401
    except ImportError:
        if requested != "auto":
            raise RuntimeError("lmdeploy is not installed in this environment: run `make setup`") from None
        return "transformers", "lmdeploy is not installed: using transformers"
    if requested == "pytorch":
        return "pytorch", "LMDeploy PyTorch engine requested"
    loads, why = turbomind_loads()
    if requested == "turbomind":
        if not loads:
            raise RuntimeError(f"TurboMind cannot run here: {why}. Use backend='pytorch'.")
        return "turbomind", "LMDeploy TurboMind requested"
    if loads:
        return "turbomind", f"CUDA GPU ({torch.cuda.get_device_name(0)}): using LMDeploy TurboMind"
    return "pytorch", f"CUDA GPU, but TurboMind {why}: using LMDeploy's PyTorch engine"


def _split_prompt(prompt: str | tuple) -> tuple[str, ImageSource | None]:
    """``"text"``, ``(text, image)`` or ``(image, text)`` -> (text, image)."""
    if isinstance(prompt, str):
        return prompt, None
    if isinstance(prompt, tuple) and len(prompt) == 2:
        first, second = prompt
        return (first, second) if isinstance(first, str) else (second, first)
    raise TypeError(f"a prompt is a string or a (text, image) pair, got {type(prompt).__name__}")


# "auto": transformers computes in bfloat16 on a GPU and float32 on a CPU; LMDeploy picks its own.
# Comparing engines greedily needs the same precision: a near-tie between two tokens can go
# either way in bfloat16.
DTYPES = ("auto", "float32", "float16", "bfloat16")


class ChatPipeline:
    """Multi-turn image chat over one backend; create it with ``pipeline(...)``."""

    def __init__(self, model_path: str | Path | None = None, backend: str = "auto", tp: int = 1,
                 max_num: int | None = None, session_len: int | None = None, dtype: str = "auto",
                 quiet: bool = False, trust_remote_code: bool = False) -> None:
        from internvl_course.model.folder import inspect_folder
        from internvl_course.paths import tiny_model_dir

        self.model_path = Path(model_path) if model_path else tiny_model_dir()
        if not model_path and not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(f"the embedded tiny model {self.model_path} is not built yet: run `make setup` "
                                    "(or `internvl-course build`), or point model_path at InternVL2 weights.")
        self.trust_remote_code = trust_remote_code
        self.folder = None if trust_remote_code else inspect_folder(self.model_path)  # refuses bad input now
        if tp < 1:
            raise ValueError(f"tp must be >= 1, got {tp}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = dtype
        self.backend, self.reason = choose_backend(backend)
        if tp > 1 and self.backend == "transformers":
            raise ValueError("tp > 1 (tensor parallelism) needs an LMDeploy backend on several GPUs")
        if not quiet:
            print(self.reason)
        self.tp = tp
        import json

        config = self.folder.config if self.folder else json.loads((self.model_path / "config.json").read_text())
        self.config = config
        # The context every backend is held to: the model's own maximum unless asked for less
        # (LMDeploy's engine then keeps its KV cache to it as well).
        self.model_max_length = int((config.get("llm_config") or {}).get("max_position_embeddings") or 0)
        if session_len is None:
            if not self.model_max_length:
                raise ValueError(f"{self.model_path / 'config.json'} names no llm_config.max_position_embeddings: "
                                 "pass session_len=... (the context in tokens)")
            session_len = self.model_max_length
        elif isinstance(session_len, bool) or not isinstance(session_len, int) or session_len < 1:
            raise ValueError(f"session_len must be None (the model's maximum, {self.model_max_length}) "
                             f"or a whole number >= 1, got {session_len!r}")
        self.session_len = session_len
        self.max_num = max_num or config.get("max_dynamic_patch", 12)
        self.use_thumbnail = bool(config.get("use_thumbnail", True))
        self._lock = threading.Lock()  # one generation at a time per loaded model
        if self.backend == "transformers":
            self._load_transformers()
        else:
            self._load_lmdeploy()

    # -- loading -------------------------------------------------------------------------------
    def _load_transformers(self) -> None:
        import torch

        from internvl_course.model.load import load_model

        self.device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        if self.dtype == "auto":
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            dtype = getattr(torch, self.dtype)
        self.model, self.tokenizer = load_model(self.model_path, dtype=dtype, device=self.device,
                                                trust_remote_code=self.trust_remote_code)

    def _load_lmdeploy(self) -> None:
        from lmdeploy import PytorchEngineConfig, TurbomindEngineConfig
        from lmdeploy import pipeline as lmdeploy_pipeline

        from internvl_course.device import MULTICAST_OFF, check_gpu_count

        if self.dtype == "float32":
            raise ValueError("LMDeploy computes in float16 or bfloat16 only: use dtype='auto', 'float16' or "
                             "'bfloat16' with an LMDeploy backend (or backend='transformers' for float32)")
        if self.tp > 1:
            check_gpu_count(self.tp, "tp")
        # The kit counts each turn's tokens itself (``_room``), before LMDeploy is asked.
        if self.trust_remote_code:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=True, use_fast=False)
        else:
            from internvl_course.model.load import load_tokenizer

            self.tokenizer = load_tokenizer(self.model_path, self.folder)
        engine = TurbomindEngineConfig if self.backend == "turbomind" else PytorchEngineConfig
        # LMDeploy imports the folder's code itself: give it one holding the kit's code (the
        # checkpoint's own folder when the kit wrote it), unless the user trusts the folder's.
        if self.trust_remote_code:
            folder = self.model_path
        else:
            from internvl_course.model.prepare import prepared_folder

            folder = prepared_folder(self.model_path, "LMDeploy")
        # Several GPUs talk over NCCL, which reads these while the pipeline is built (LMDeploy's
        # worker processes copy the environment as they start): multicast is off for the engine,
        # and the caller's environment is as it was afterwards.
        with environment(**(MULTICAST_OFF if self.tp > 1 else {})):
            self.engine = lmdeploy_pipeline(str(folder), trust_remote_code=True, log_level="ERROR",
                                            backend_config=engine(tp=self.tp, session_len=self.session_len,
                                                                  dtype=self.dtype))

    # -- chatting ------------------------------------------------------------------------------
    def _pixel_values(self, image: Any):
        from internvl_course.model.preprocess import load_image

        pixel_values = load_image(image, max_num=self.max_num, use_thumbnail=self.use_thumbnail)
        dtype = next(self.model.parameters()).dtype
        return pixel_values.to(self.device, dtype)

    def chat(self, prompt: str | tuple, session: Session | None = None,
             gen_config: GenerationConfig | None = None, streamer: Any = None,
             control: TurnControl | None = None) -> Session:
        """One turn. The first turn of a session may carry a picture; later turns talk about it.

        ``streamer`` (a transformers streamer) and ``control`` (to cancel) serve ``stream_chat``.
        """
        gen_config = gen_config or GenerationConfig()
        text, image = _split_prompt(prompt)
        if session is None:
            session = Session()
        room = self._start_turn(text, image, session)
        with self._lock:
            if self.backend == "transformers":
                response = self._chat_transformers(text, session, gen_config, streamer, control or TurnControl(), room)
            else:
                response = self._chat_lmdeploy(text, session, gen_config)
        session.history.append((text, response.text))
        session.response = response
        return session

    def _start_turn(self, text: str, image: ImageSource | None, session: Session) -> int:
        """Check a turn before anything runs, put its picture in the session, and return the
        tokens left for the reply. A refused turn leaves the session as it was."""
        from internvl_course.model.preprocess import open_image

        picture = None
        if image is not None:
            if session.history:
                raise ValueError("a picture can only start a conversation: start a new session for a new picture")
            picture = open_image(image)
        room = self._room(text, picture if picture is not None else session.image, session.history)
        if picture is not None:
            session.image = picture
        return room

    def _tiling(self) -> tuple[int, int, int]:
        """(fewest tiles, most tiles, tokens per tile) of a picture as this backend cuts it: the
        kit's ``load_image`` with ``max_num`` for transformers, config.json's limits for LMDeploy,
        whose own preprocessing reads them there."""
        from internvl_course.model.preprocess import DOWNSAMPLE_RATIO, IMAGE_SIZE, PATCH_SIZE, tokens_per_tile

        vision = self.config.get("vision_config") or {}
        size = self.config.get("force_image_size") or vision.get("image_size", IMAGE_SIZE)
        per_tile = tokens_per_tile(size, vision.get("patch_size", PATCH_SIZE),
                                   self.config.get("downsample_ratio", DOWNSAMPLE_RATIO))
        if self.backend == "transformers":
            return 1, self.max_num, per_tile
        return self.config.get("min_dynamic_patch", 1), self.config.get("max_dynamic_patch", 12), per_tile

    def _prompt_length(self, text: str, picture: Any, history: list[tuple[str, str]]) -> tuple[int, int]:
        """(tokens, tiles) of the prompt the model reads for ``text`` after ``history``: the chat
        template with its system message, the earlier turns, the picture's tiles and the question,
        written by ``model.prompt`` exactly as the model's own ``chat`` writes it."""
        from internvl_course.model.preprocess import num_tiles
        from internvl_course.model.prompt import build_prompt, with_image

        own = self.model if self.backend == "transformers" else None  # a lesson may change its system message
        template = getattr(own, "template", None) or self.config.get("template")
        system_message = getattr(own, "system_message", None) or self.config.get("system_message")
        turns: list[tuple[str, str | None]] = [*history, (text, None)]
        min_num, max_num, per_tile = self._tiling()
        tiles = 0
        if picture is not None:
            tiles = num_tiles(picture.width, picture.height, min_num, max_num, use_thumbnail=self.use_thumbnail)
            turns[0] = (with_image(turns[0][0]), turns[0][1])
        query = build_prompt(template, system_message, turns, [tiles] if tiles else [], per_tile)
        return len(self.tokenizer(query, verbose=False)["input_ids"]), tiles

    def prompt_tokens(self, prompt: str | tuple, session: Session | None = None) -> int:
        """How many tokens the model reads for ``prompt`` as the next turn of ``session`` (a new
        one by default), picture and earlier turns included: what ``session_len`` bounds."""
        from internvl_course.model.preprocess import open_image

        text, image = _split_prompt(prompt)
        session = session or Session()
        picture = open_image(image) if image is not None else session.image
        return self._prompt_length(text, picture, session.history)[0]

    def _room(self, text: str, picture: Any, history: list[tuple[str, str]]) -> int:
        """The tokens left for the reply, or ``PromptTooLongError`` with the numbers and the fixes
        when the prompt fills the context: checked on every backend before the model runs, where a
        100,000-character question once ran for 25 s and died allocating 40 GB."""
        total, tiles = self._prompt_length(text, picture, history)
        if total < self.session_len:
            return self.session_len - total
        question = len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        _, max_num, per_tile = self._tiling()
        parts = [f"{question} tokens for this question"]
        if tiles:
            parts.append(f"{tiles * per_tile} tokens for the picture ({tiles} tile{'s' * (tiles > 1)} of {per_tile})")
        if history:
            parts.append(f"{len(history)} earlier turn{'s' * (len(history) > 1)}")
        where = "pipeline(..., max_num=...)" if self.backend == "transformers" else "max_dynamic_patch in config.json"
        tiles_fix = f"fewer tiles per picture ({where}, now {max_num})"
        larger = (f", or a larger session_len (the model takes up to {self.model_max_length})"
                  if self.session_len < self.model_max_length else "")
        raise PromptTooLongError(
            f"the prompt is {total} tokens ({', '.join(parts)} and the chat template), which fills the context "
            f"of {self.session_len} tokens (session_len) and leaves no room for a reply. Ask a shorter question, use "
            f"a smaller picture or {tiles_fix}, or start a new session (session=None) to drop the earlier turns"
            f"{larger}.")

    def stream_chat(self, prompt: str | tuple, session: Session | None = None,
                    gen_config: GenerationConfig | None = None) -> Iterator[tuple[str, Session]]:
        """Yield (text so far, session) as tokens arrive; the last item holds the whole reply."""
        session = session if session is not None else Session()
        if self.backend != "transformers":
            yield from self._stream_lmdeploy(prompt, session, gen_config or GenerationConfig())
            return
        from transformers import TextIteratorStreamer

        from internvl_course.modelcode.conversation import get_conv_template

        stop = get_conv_template(self.model.template).stop_token
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=False, skip_special_tokens=True)
        control = TurnControl()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                self.chat(prompt, session=session, gen_config=gen_config, streamer=streamer, control=control)
            except BaseException as err:  # surfaced in the caller's thread below
                outcome["error"] = err
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        text = ""
        try:
            for piece in streamer:
                text += piece
                yield text.split(stop)[0].strip(), session
        finally:  # the reader stopped early (GeneratorExit) or finished: free the model either way
            control.cancel()
            thread.join()
        if "error" in outcome:
            raise outcome["error"]
        yield session.response.text, session

    def _chat_transformers(self, text: str, session: Session, gen_config: GenerationConfig,
                           streamer: Any, control: TurnControl, room: int) -> Response:
        import torch
        from transformers import StoppingCriteriaList

        pixel_values = self._pixel_values(session.image) if session.image is not None else None
        kwargs = gen_config.for_transformers()
        if kwargs["max_new_tokens"] > room:  # the reply ends where the context does, as LMDeploy's does
            kwargs["max_new_tokens"] = room
            if "min_new_tokens" in kwargs:
                kwargs["min_new_tokens"] = room
        kwargs["stopping_criteria"] = StoppingCriteriaList([control])
        if streamer is not None:
            kwargs["streamer"] = streamer
        if gen_config.seed is not None:
            torch.manual_seed(gen_config.seed)
        with torch.no_grad():
            reply, session.backend_state = self.model.chat(self.tokenizer, pixel_values, text, kwargs,
                                                           history=session.backend_state, return_history=True)
        finish = "length" if control.generated >= kwargs["max_new_tokens"] else "stop"
        return Response(text=reply, generate_token_len=control.generated, finish_reason=finish)

    def _lmdeploy_turn(self, text: str, session: Session, gen_config: GenerationConfig):
        """Start one LMDeploy turn; returns a generator of response pieces for this session."""
        if session.backend_state is None:
            session.backend_state = self.engine.session()
            # The picture goes first, as in InternVL's chat(): pipe.chat((image, text)).
            prompt = (session.image, text) if session.image is not None else text
        else:
            prompt = text
        return self.engine.chat(prompt, session=session.backend_state, gen_config=gen_config.for_lmdeploy(),
                                stream_response=True)

    def _chat_lmdeploy(self, text: str, session: Session, gen_config: GenerationConfig) -> Response:
        for _ in self._lmdeploy_turn(text, session, gen_config):
            pass
        r = session.backend_state.response
        return Response(text=r.text, generate_token_len=r.generate_token_len, finish_reason=r.finish_reason)

    def _stream_lmdeploy(self, prompt: str | tuple, session: Session,
                         gen_config: GenerationConfig) -> Iterator[tuple[str, Session]]:
        text, image = _split_prompt(prompt)
        self._start_turn(text, image, session)  # LMDeploy ends the reply at session_len itself
        reply = ""
        with self._lock, closing(self._lmdeploy_turn(text, session, gen_config)) as pieces:
            for piece in pieces:  # closing it early makes LMDeploy abort the request
                reply += piece.text
                yield reply, session
        r = session.backend_state.response
        session.response = Response(text=r.text, generate_token_len=r.generate_token_len, finish_reason=r.finish_reason)
        session.history.append((text, r.text))
        yield r.text, session

    def batch(self, prompts: Sequence[str | tuple], gen_config: GenerationConfig | None = None) -> list[Response]:
        """Independent one-turn questions (a fresh session each), answered in one call."""
        gen_config = gen_config or GenerationConfig()
        sessions = []
        for prompt in prompts:  # every question is checked before any is answered
            text, image = _split_prompt(prompt)
            session = Session()
            self._start_turn(text, image, session)
            sessions.append((text, session))
        if self.backend == "transformers":
            return [self.chat(text, session=session, gen_config=gen_config).response for text, session in sessions]
        requests = [(session.image, text) if session.image is not None else text for text, session in sessions]
        with self._lock:
            results = self.engine(requests, gen_config=gen_config.for_lmdeploy())
        return [Response(text=r.text, generate_token_len=r.generate_token_len, finish_reason=r.finish_reason)
                for r in results]

    def end(self, session: Session) -> None:
        """Forget a conversation, freeing what the backend keeps for it (LMDeploy's KV cache)."""
        if self.backend != "transformers" and session.backend_state is not None:
            session.backend_state.close()
        session.backend_state = None
        session.history.clear()
        session.response = None

    def close(self) -> None:
        if self.backend != "transformers":
            self.engine.close()


def pipeline(model_path: str | Path | None = None, backend: str = "auto", tp: int = 1, **kwargs: Any) -> ChatPipeline:
    """Load a model for chat; ``model_path`` defaults to the embedded tiny InternVL2."""
    return ChatPipeline(model_path, backend=backend, tp=tp, **kwargs)
