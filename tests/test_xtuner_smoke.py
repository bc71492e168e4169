"""XTuner really trains the embedded tiny InternVL2 in the train env, and its exit status is real.

The training run asserted on here is the session's shared one (``xtuner_run`` in tests/conftest.py);
test_training.py checks its exit status and a failing run's.
"""

from __future__ import annotations

import json

import pytest
import torch

from internvl_course.finetune import trainenv

pytestmark = pytest.mark.slow


def test_xtuner_keeps_only_what_it_trains(xtuner_run):
    """The shared run's last checkpoint (test_training.py checks that the run exited 0 and logged
    its four iterations)."""
    _, work, _ = xtuner_run
    checkpoint = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=False)
    names = list(checkpoint["state_dict"])
    # XTuner keeps only what it trains: the LoRA adapters of the LLM and the mlp1 projector.
    assert any("lora_A" in n for n in names) and any("mlp1" in n for n in names)
    assert all("lora_" in n or "mlp1" in n for n in names)
    # cpu-tiny trains mlp1 in float32 (XTuner would leave it in bfloat16 on a CPU).
    assert {checkpoint["state_dict"][n].dtype for n in names if "mlp1" in n} == {torch.float32}


# Builds XTuner's model through the config's factory in the train env and reports what the two
# CPU switches changed, after one forward pass through the bfloat16 ViT and mlp1.
_SWITCHES = """
import json, sys, torch
from peft import LoraConfig
from internvl_course.finetune.launch import init_cpu_process_group, internvl_model
init_cpu_process_group()
report = {}
for fp32, checkpointing in ((False, True), (True, False)):
    model = internvl_model(model_path=sys.argv[1], freeze_llm=True, freeze_visual_encoder=True,
                           llm_lora=LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"),
                           trainable_fp32=fp32, activation_checkpointing=checkpointing)
    features = model.model.extract_feature(torch.rand(1, 3, 448, 448, dtype=torch.bfloat16))
    report[str(fp32)] = {"mlp1": str(next(model.model.mlp1.parameters()).dtype),
                         "vit": str(next(model.model.vision_model.parameters()).dtype),
                         "features": str(features.dtype),
                         "checkpointing": model.model.language_model.is_gradient_checkpointing}
print("REPORT" + json.dumps(report))
"""


def test_the_cpu_switches_of_the_xtuner_model(tiny_model):
    result = trainenv.run_in_train_env(["-c", _SWITCHES, str(tiny_model)], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    # Off, the factory is XTuner's own model: bfloat16 mlp1, activations checkpointed.
    assert report["False"] == {"mlp1": "torch.bfloat16", "vit": "torch.bfloat16", "features": "torch.bfloat16",
                               "checkpointing": True}
    # On: mlp1 in float32 behind the still-bfloat16 ViT, no recomputation.
    assert report["True"] == {"mlp1": "torch.float32", "vit": "torch.bfloat16", "features": "torch.float32",
                              "checkpointing": False}
