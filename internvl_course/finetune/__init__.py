"""Fine-tuning with XTuner, and what comes after it.

- ``presets``: XTuner configs for InternVL2 rendered from presets (``settings_for``, ``write_config``);
- ``trainenv``: the bridge from the notebook kernel to the train env (``.venv-train``);
- ``launch``: runs ``xtuner.tools.train`` inside the train env, on a CPU as well as on GPUs;
- ``training``: training from a notebook: a live progress bar, kept logs, resume, loss curves;
- ``convert``: an XTuner checkpoint merged into an official-format model folder;
- ``evaluate``: food VQA scores (multiple choice and naming the dish), before and after.
"""
