"""The course env is registered as the Jupyter kernel ``internvl-course``, and it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("jupyter_client")


def test_kernel_is_registered_to_the_course_env():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("internvl-course")
    assert Path(spec.argv[0]) == REPO / ".venv" / "bin" / "python"
    assert spec.language == "python"


def test_kernel_starts_and_imports_the_kit():
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="internvl-course")
    try:
        seen = []
        reply = client.execute_interactive(
            "import sys, internvl_course, lmdeploy; print(sys.prefix, internvl_course.__version__)",
            timeout=120, output_hook=lambda msg: seen.append(msg["content"].get("text", "")))
        assert reply["content"]["status"] == "ok"
        prefix, version = "".join(seen).split()
        assert Path(prefix) == REPO / ".venv"
        import internvl_course

        assert version == internvl_course.__version__
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
