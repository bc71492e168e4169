"""The course plan: which notebooks make up the course, in order.

The runner, ``outputs``, the tests and lesson 00 read the notebooks from here, with the
parameters of a quick run (``SMOKE_PARAMS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from internvl_course.paths import notebooks_dir


@dataclass(frozen=True)
class Notebook:
    number: str  # "00".."99": the run order
    slug: str
    title: str
    title_zh: str

    @property
    def filename(self) -> str:
        return f"{self.number}_{self.slug}.ipynb"

    def path(self, root: Path | None = None) -> Path:
        return (root or notebooks_dir()) / self.filename


COURSE: tuple[Notebook, ...] = (
    Notebook("00", "check_your_setup", "Check your setup", "检查环境"),
    Notebook("01", "multimodal_design_patterns", "Multimodal design patterns", "多模态大模型的设计模式"),
    Notebook("02", "internvl2_architecture", "InternVL2 architecture: ViT-MLP-LLM",
             "InternVL2 的模型架构"),
    Notebook("03", "dynamic_resolution_and_pixel_shuffle", "Dynamic resolution and pixel shuffle",
             "动态高分辨率与像素重排"),
    Notebook("04", "chat_with_lmdeploy", "Chat with LMDeploy and the gradio demo", "用 LMDeploy 对话"),
    Notebook("05", "food_vqa_data", "Food VQA data and evaluation", "美食问答数据与评测"),
    Notebook("06", "finetune_with_xtuner", "LoRA fine-tuning with XTuner", "用 XTuner 微调"),
    Notebook("07", "convert_and_compare", "Convert, chat again, compare before and after", "转换与对比"),
)


#: Small values that make each notebook finish in seconds (``internvl-course run --params smoke``);
#: ``full`` uses each notebook's own ``parameters`` cell.
SMOKE_PARAMS: dict[str, dict[str, object]] = {
    "00": {"matmul_size": 256},
    "01": {"num_train": 1024, "num_test": 256, "clip_steps": 150, "joint_steps": 150, "fusion_steps": 150},
    "02": {"picture": "square", "max_num": 2, "max_new_tokens": 4},
    "03": {"max_num": 6, "huge_width": 1500},
    "04": {"max_new_tokens": 16, "repeats": 2},
    "05": {"max_images": 2, "max_new_tokens": 8},
    "06": {"max_iters": 6},
    "07": {"max_images": 2, "max_new_tokens": 8},
}


def present(root: Path | None = None) -> list[Notebook]:
    """The planned notebooks that exist in ``notebooks/``, in run order."""
    return [nb for nb in COURSE if nb.path(root).exists()]

