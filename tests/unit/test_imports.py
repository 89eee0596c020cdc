"""The package's imports form layers: no cycle between modules, and no module imports one above it.

Every ``import`` of a ``pipeline`` module counts, at the top of a file or inside a function (an import
deferred into a function is still a dependency). The layers, lowest first:

0. the core every part may use: errors, the model, the choice lists, files, net, backoff;
1. what describes the world: config, the venue records and wire formats, the board, book trust, reference data;
2. pure logic and libraries over them: the feed session and transport, the detector's engine, recording,
   the simulator's market and protocols (each venue's ``sim.py`` included), the bridge's codec, the
   console's views, the outputs, the child runtime;
3. the processes: feed, detector, output, simulator, bridge, health and metrics, the console;
4. the supervisor, which starts the processes;
5. the commands (``run.py`` and its subcommands), which nothing imports.
"""
from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("imports")      # one worker reads the package once (pipeline_graph)

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"

LAYERS = [  # (layer, pattern over the dotted module name); the first pattern that matches decides
    (0, r"pipeline(\.(errors|model|choices|files|net|backoff))?"),
    (1, r"pipeline\.(config|book|refdata|fees)|pipeline\.board(\..*)?|"
        r"pipeline\.venues(\.\w+)?(\.(wire|_common|account))?"),
    (2, r"pipeline\.venues\.\w+\.sim|pipeline\.feed\.(session|retry|transport|fees|arbiter)|"
        r"pipeline\.detector(\.(scan|rules|"
        r"engine|lifecycle|report|sizing))?|pipeline\.recording(\..*)?|pipeline\.sim\.(market|protocol|account|paths)|"
        r"pipeline\.sim|pipeline\.bridge(\.(codec|rows|stream|changes))?|pipeline\.console(\.(events|render|snapshot))?|"
        r"pipeline\.output(\.(writers|sink))?|pipeline\.runtime|pipeline\.feed|pipeline\.decisions"),
    (3, r"pipeline\.(feed|detector|sim|bridge)\.process|pipeline\.sim\.server|pipeline\.health(\..*)?|"
        r"pipeline\.console\.app|pipeline\.output\.(process|publisher)"),
    (4, r"pipeline\.supervisor(\..*)?"),
    (5, r"pipeline\.commands(\..*)?"),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer(module: str) -> int:
    for level, pattern in LAYERS:
        if re.fullmatch(pattern, module):
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the pipeline modules it imports (``from pkg import name`` counts as the submodule when
    ``name`` is one, else as the package)."""
    graph = {}
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            for name in names:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name.startswith("pipeline") and name != module:
                    found.add(name)
        graph[module] = found
    return graph


@functools.cache
def pipeline_graph() -> dict[str, set[str]]:
    """:func:`imports` of the whole package, read once (parsing every module is most of this file's time; the
    file's tests run on one worker, tests/conftest.py ONE_WORKER)."""
    return imports(modules())


def test_every_module_has_a_layer():
    for module in modules():
        layer(module)


def upward(graph) -> list[str]:
    return sorted(f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, deps in graph.items() for d in deps
                  if layer(d) > layer(m))


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    found, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_one_above_it():
    assert upward(pipeline_graph()) == []


def test_no_import_cycle():
    assert cycles(pipeline_graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The checks catch what they are for, on made-up graphs; and the walker reads real imports, deferred
    ones included."""
    assert cycles({"pipeline.a": {"pipeline.b"}, "pipeline.b": {"pipeline.c"}, "pipeline.c": {"pipeline.a"}}) == [
        ["pipeline.a", "pipeline.b", "pipeline.c"]]
    assert upward({"pipeline.board.shm": {"pipeline.supervisor.core"}}) == [
        "pipeline.board.shm (1) imports pipeline.supervisor.core (4)"]
    graph = pipeline_graph()
    assert "pipeline.board" in graph["pipeline.supervisor.core"]
    assert "pipeline.console.app" in graph["pipeline.supervisor.core"]       # imported inside a method


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: numpy's BLAS starts no thread of its own")
def test_importing_the_package_and_numpy_starts_no_thread():
    """A fresh interpreter that imports the board (and so numpy) runs on its one thread: numpy's BLAS pool,
    a thread per CPU spinning at start, is not started (``pipeline/__init__.py``)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    code = ("import pipeline.board, numpy, os; "
            "print(len(os.listdir('/proc/self/task')), numpy.ones(3).dot(numpy.ones(3)))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "3.0"]
