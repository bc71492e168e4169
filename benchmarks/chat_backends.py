"""Every chat backend that runs here, asked the same things greedily through internvl_course.serve.chat.

    python benchmarks/chat_backends.py [--model DIR] [--json out.json]

For each backend (transformers, LMDeploy's PyTorch engine, TurboMind) it either loads the model
and answers a two-turn conversation about a fixed picture plus one text-only question, or
prints why it cannot run here. Greedy answers of the LMDeploy engines are compared with the
transformers backend's. Each backend runs in its own process (LMDeploy spawns workers, hence the
``__main__`` guard).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from report import ChildFailed, emit_result, run_child

TURNS = ["请描述这张图片。", "What colour is the plate?"]
TEXT_ONLY = "你好，请介绍一下你自己。"


def ask(model: str | None, backend: str, max_new_tokens: int, dtype: str = "auto") -> dict:
    from internvl_course.serve.chat import GenerationConfig, pipeline
    from internvl_course.data.drawing import Piece, Scene, render

    picture = render(Scene(pieces=(Piece("circle", "red", 3), Piece("square", "blue", 1)), plate_colour="white"),
                     seed=11)
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    start = time.perf_counter()
    pipe = pipeline(model, backend=backend, dtype=dtype, quiet=True)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    session = pipe.chat((TURNS[0], picture), gen_config=config)
    session = pipe.chat(TURNS[1], session=session, gen_config=config)
    text_only = pipe.chat(TEXT_ONLY, gen_config=config).response.text
    answers = [a for _, a in session.history] + [text_only]
    result = {"backend": pipe.backend, "reason": pipe.reason, "load_s": round(load_s, 2),
              "chat_s": round(time.perf_counter() - start, 2), "answers": answers}
    pipe.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the embedded tiny model)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--dtype", default="auto", help="auto, float16 or bfloat16 for every backend (greedy "
                        "answers are only comparable at one precision)")
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.backend:
        emit_result(ask(args.model, args.backend, args.max_new_tokens, args.dtype))
        return 0

    from internvl_course.serve.chat import choose_backend

    print("auto choice: " + " / ".join(choose_backend("auto")))
    results = {}
    for backend in ("transformers", "pytorch", "turbomind"):
        try:
            choose_backend(backend)
        except RuntimeError as err:
            results[backend] = {"backend": backend, "runs": False, "why": str(err)}
            print(f"{backend:<13} cannot run here: {err}")
            continue
        cmd = [sys.executable, __file__, "--backend", backend, "--max-new-tokens", str(args.max_new_tokens),
               "--dtype", args.dtype]
        cmd += ["--model", args.model] if args.model else []
        try:
            results[backend] = {"runs": True, **run_child(cmd)}
        except ChildFailed as err:
            results[backend] = {"backend": backend, "runs": False, "why": str(err)}
            print(f"{backend:<13} failed: {err}")
            continue
        r = results[backend]
        print(f"{backend:<13} load {r['load_s']:>6.2f} s, three answers in {r['chat_s']:>6.2f} s")
        for question, answer in zip(TURNS + [TEXT_ONLY], r["answers"]):
            print(f"{'':<13} {question} -> {answer!r}")
    reference = results["transformers"].get("answers")
    for backend in ("pytorch", "turbomind"):
        if results[backend].get("runs"):
            same = results[backend]["answers"] == reference
            results[backend]["equal_to_transformers"] = same
            print(f"{backend} greedy answers equal transformers': {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
