"""The ``internvl-course`` command (installed in the course env)."""

from __future__ import annotations

import argparse
import importlib
import sys

#: Verbs whose module parses its own arguments: ``internvl-course data build`` runs
#: ``internvl_course.data.food_vqa.main(["build"])``; ``internvl-course data --help`` is its help.
FORWARDED = {
    "data": ("internvl_course.data.food_vqa", "build or check the kit's food VQA dataset (data/food)"),
    "foodieqa": ("internvl_course.data.foodieqa", "FoodieQA from your own copy: a held-out evaluation set"),
    "train": ("internvl_course.finetune.training", "train with XTuner in the train env (resumes by default)"),
    "convert": ("internvl_course.finetune.convert", "merge an XTuner checkpoint into an official-format folder"),
    "base": ("internvl_course.tiny.pretrain", "retrain the tiny model's talking base, data/tiny_base"),
    "fullsize": ("internvl_course.tiny.fullsize", "a full-size InternVL2-shaped folder with random weights"),
    "wheelhouse": ("internvl_course.course.wheelhouse", "offline wheel bundles (make wheelhouse)"),
}


def build_artifacts(force: bool = False) -> int:
    """Build what the course generates, skipping what is already there (unless ``force``).

    The tiny model's folder is replaced only if the kit wrote it (``fileio``). One an older kit
    wrote carries no marker; at this path, the kit's own under work_dirs/models/, a folder holding
    only what the kit writes in a model folder is taken for it, so ``make`` keeps rebuilding it
    (``model.write.adopt_older_model_folder``); any other file in it stops the build, named.
    """
    from internvl_course.paths import tiny_model_dir
    from internvl_course.tiny.build import build_tiny_model

    target = tiny_model_dir()
    if (target / "config.json").exists() and not force:
        print(f"embedded model: already built at {target}")
        return 0
    print(f"embedded model: building {target} ...", flush=True)
    try:
        build_tiny_model(target, overwrite=True)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
    print(f"embedded model: built {target} ({size:.1f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internvl-course", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="check both environments, the hardware and what is built")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--model", help="also check this model folder: family, template, files, what will run")

    build = sub.add_parser("build", help="build the embedded tiny InternVL2 (setup does this)")
    build.add_argument("--force", action="store_true", help="rebuild even if it exists")

    run = sub.add_parser("run", help="run the course notebooks headless with papermill")
    run.add_argument("--only", action="append", default=[],
                     help="notebook number(s) to run, e.g. --only 03 (repeatable)")
    run.add_argument("--params", default="full",
                     help="'smoke' (small and fast), 'full' (the notebooks' own defaults) or a YAML/JSON file")
    run.add_argument("--out", default=None, help="output folder (default work_dirs/runs/<timestamp>)")

    outputs = sub.add_parser("outputs", help="run the notebooks with their defaults and commit their cleaned outputs")
    outputs.add_argument("--only", action="append", default=[],
                         help="notebook number(s), e.g. --only 03 (repeatable); 07 needs 06 in the same run")
    outputs.add_argument("--cells-only", action="store_true",
                         help="only insert the apply_params cell after each parameters cell; run nothing")

    demo = sub.add_parser("demo", help="the gradio chat demo (lesson 04)")
    demo.add_argument("--model", default=None, help="model directory (default: the embedded tiny model)")
    demo.add_argument("--port", type=int, default=1096)
    demo.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 exposes the demo to your network")

    for verb, (_, help_text) in FORWARDED.items():
        sub.add_parser(verb, help=help_text, add_help=False)  # listed in --help; main() forwards it

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in FORWARDED:  # before argparse, which would take the verb's own --help
        return importlib.import_module(FORWARDED[argv[0]][0]).main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from internvl_course.course.doctor import main as doctor_main

        return doctor_main(as_json=args.json, model_path=args.model)
    if args.command == "build":
        return build_artifacts(force=args.force)
    if args.command == "run":
        from internvl_course.course.runner import main as run_main

        return run_main(only=args.only, params=args.params, out=args.out)
    if args.command == "outputs":
        from internvl_course.course.outputs import main as outputs_main

        return outputs_main(only=args.only, cells_only=args.cells_only)
    if args.command == "demo":
        from internvl_course.serve.demo import main as demo_main

        return demo_main(model=args.model, host=args.host, port=args.port)
    parser.error(f"unknown command {args.command}")  # a verb added above but not dispatched here


if __name__ == "__main__":
    sys.exit(main())
