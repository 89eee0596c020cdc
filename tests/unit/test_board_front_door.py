"""The board is entered by its front door, and the pipeline's vocabulary does not depend on its layout."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.board
from pipeline import model

REPO = Path(__file__).resolve().parents[2]
# modules that decide about trust and configuration: they use the states, never the shared-memory layout
LAYOUT_FREE = ("pipeline/book.py", "pipeline/feed/session.py", "pipeline/detector/rules.py",
               "pipeline/detector/engine.py", "pipeline/detector/lifecycle.py", "pipeline/config.py")


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports (at any depth of its code), by its dotted name."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


def test_outside_the_board_every_import_is_from_pipeline_board_itself():
    sources = [p for p in sorted((REPO / "pipeline").rglob("*.py")) if (REPO / "pipeline" / "board") not in p.parents]
    sources += sorted((REPO / "bench").rglob("*.py")) + [REPO / "run.py"]
    assert len(sources) > 50
    inner = {str(p.relative_to(REPO)): [m for m in _imports(p) if m.startswith("pipeline.board.")] for p in sources}
    assert {path: modules for path, modules in inner.items() if modules} == {}


@pytest.mark.parametrize("path", LAYOUT_FREE)
def test_trust_and_config_modules_do_not_import_the_board(path):
    assert [m for m in _imports(REPO / path) if m == "pipeline.board" or m.startswith("pipeline.board.")] == []


def test_book_session_rules_and_config_load_without_the_board():
    code = ("import sys\n"
            "import pipeline.book, pipeline.feed.session, pipeline.detector.rules, pipeline.detector.lifecycle\n"
            "import pipeline.config\n"
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.board')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_front_door_hands_out_the_models_enums():
    assert pipeline.board.RowStatus is model.RowStatus
    assert pipeline.board.SkipReason is model.SkipReason
    assert pipeline.board.ProcessRole is model.ProcessRole
    assert pipeline.board.MAX_DEPTH == model.MAX_DEPTH == 10
    assert all(hasattr(pipeline.board, name) for name in pipeline.board.__all__)
