"""CI runs exactly the README's test command: one command to read, one to run, never two that drift apart."""
from __future__ import annotations

import re

from tests.conftest import REPO


def readme_test_command() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"Install and run the tests \(this is what `\.ci/run` calls\):\n\n    (.+)\n", text)
    assert found, "README.md: the test command paragraph is missing"
    return found.group(1)


def test_ci_runs_the_readme_test_command_word_for_word():
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == readme_test_command()


def test_the_test_command_lints_and_type_checks_before_the_tests():
    command = readme_test_command()
    assert command.index("ruff check .") < command.index("mypy") < command.index("python -m pytest")
