"""The ``internvl-course`` command: every tool the README and Makefile name is one of its verbs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from internvl_course import cli


@pytest.mark.parametrize("verb", sorted(cli.FORWARDED))
def test_each_forwarded_verb_shows_its_own_help(verb, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([verb, "--help"])
    assert stop.value.code == 0
    assert f"usage: internvl-course {verb}" in capsys.readouterr().out


def test_the_main_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    assert all(verb in listed for verb in [*cli.FORWARDED, "doctor", "build", "run", "outputs", "demo"])


def test_a_forwarded_verb_runs_its_module_with_the_rest_of_the_line():
    assert cli.main(["data", "check"]) == 0  # the shipped dataset validates


def test_the_wheelhouse_verb_needs_no_third_party_package():
    """`make wheelhouse` runs the CLI with the tools venv's bare Python: no torch there."""
    code = ("import sys; from internvl_course import cli; import internvl_course.course.wheelhouse; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
