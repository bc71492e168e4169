"""internvl-course: learn how InternVL2 works, then fine-tune it with XTuner and serve it with LMDeploy.

Module map, one layer a subpackage:

- ``modelcode/``: the kit's own InternVL2 code (InternViT, InternLM2, the chat model, templates),
  standalone, because it is copied into every model folder the kit writes;
- ``model/``: real checkpoints: recognise a folder, load it with ``modelcode``, prepare it for
  LMDeploy and XTuner, write folders, build prompts, turn pictures into tiles;
- ``tiny/``: the embedded stand-in: tiny InternVL2 models of three families, their tokenizers and
  the miniature pretraining that makes them talk; full-size random models for GPU checks;
- ``data/``: the kit's food VQA dataset (words, drawing, dishes), FoodieQA import, validation;
- ``finetune/``: XTuner presets and launch, training from a notebook, conversion, evaluation;
- ``serve/``: one chat API over LMDeploy and transformers, and the gradio demo;
- ``lessons/``: what the lessons show: the design patterns of lesson 01 and every figure;
- ``course/``: the course machinery: plan, headless runner, committed outputs, doctor, wheelhouse;
- ``cli``, ``paths``, ``fileio``, ``device``: the command, where things live, atomic writes, devices.

The package is imported by every notebook (the course env) and by the training subprocesses
(the train env), so importing it stays cheap: submodules are imported where they are used.
"""

__version__ = "0.1.0"
