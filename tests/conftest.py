"""Shared test helpers, in one place: fixture paths, unique board names, reserved ports, running the CLI,
waiting for a condition (sync and async), running a coroutine with a deadline, building a feed session.

Every helper here is safe under ``pytest-xdist``: board names are unique per call, and ports are held by
the kernel for as long as the test needs them (:func:`reserved_port`), so two workers never meet.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Compiled modules are kept between runs even where PYTHONDONTWRITEBYTECODE is set: each xdist worker imports every
# test module, and recompiling them (assertion rewriting included) costs about 8 s of CPU a worker on these
# machines. They go where Python keeps them, __pycache__ beside each source (ignored by git), and not under a
# pycache prefix: a prefix would hide the compiled libraries pip installed, and on a fresh clone every worker and
# every pipeline process would compile numpy, hypothesis and the rest again. The processes the tests start
# inherit the same setting.
if sys.dont_write_bytecode:
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

FIXTURES = REPO / "tests" / "fixtures"         # real captures, with their provenance


def fixture_lines(exchange: str, name: str) -> list[str]:
    return [line for line in (FIXTURES / exchange / name).read_text().splitlines() if line.strip()]


def single_book_update(venue_module, raw):
    """The one BookUpdate a frame must parse into."""
    from pipeline.model import BookUpdate
    events = venue_module.parse(raw, 0)
    assert len(events) == 1 and isinstance(events[0], BookUpdate)
    return events[0]



def top_from_parse(parse):
    """``top`` computed the long way, from ``parse``: the short path's contract (venues/_common.py), word for word.

    The oracle the tests hold each venue's ``top`` to."""
    from pipeline.model import BBO, BookUpdate

    def top(raw):
        try:
            events = parse(raw, 0)
        except Exception:  # noqa: BLE001 - a frame parse refuses is not a top-of-book frame
            return None
        if len(events) != 1:
            return None
        e = events[0]
        if (e.__class__ is not BookUpdate or e.channel != BBO or not e.snapshot or len(e.bids) != 1
                or len(e.asks) != 1 or e.prev_seq is not None or e.checksum is not None or e.restart or e.weak
                or e.bids_text is not None or e.asks_text is not None):
            return None
        (bid_px, bid_qty), (ask_px, ask_qty) = e.bids[0], e.asks[0]
        return (e.symbol, bid_px, bid_qty, ask_px, ask_qty, e.exch_ts_ms, e.seq, e.xseq)
    return top


# Tests that must run on one xdist worker, one after another, in file order: a file whose tests share one
# module-wide setup (and rely on its order), and the tests that import ccxt (about 1.5 s of CPU, which each
# worker running one of them would pay again). Each is also marked ``xdist_group`` with the same name; this
# table is what the scheduler below reads, because pytest-xdist 3.8 cannot tag the test ids with the group under
# pytest 9 (``Item._nodeid`` is gone), so ``--dist loadgroup`` alone would spread these tests over the workers.
ONE_WORKER = {
    "tests/integration/test_bridge.py": "bridge",
    "tests/integration/test_record_replay.py": "record_replay",
    "tests/integration/test_opportunity_accounting.py": "opportunity_accounting",
    "tests/unit/test_imports.py": "imports",
    "tests/integration/test_ccxt_markets.py": "ccxt",
    "tests/integration/test_clients.py::test_ccxt_pro_client_ends_on_our_feeds_book": "ccxt",
    "tests/integration/test_account_fees_sim.py::test_the_simulator_accepts_what_ccxt_signs_and_refuses_a_wrong_"
    "secret_as_the_venue_does": "ccxt",
}


THOROUGH = False          # ``--thorough``: every property test runs its full number of examples


def pytest_addoption(parser):
    parser.addoption("--thorough", action="store_true", default=False,
                     help="property tests run their full number of examples (about 3x the default run's)")


def pytest_configure(config):
    global THOROUGH
    THOROUGH = bool(config.getoption("thorough", False))
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        # the controller compiles the package and the tests once, before the xdist workers start: on a clean
        # clone each of them would otherwise compile every module it imports, all at the same time
        import compileall
        compileall.compile_dir(REPO / "pipeline", quiet=1)
        _compile_test_modules()


def _compile_test_modules() -> None:
    """Import here, in the xdist controller, the test modules whose assertion-rewritten compiled form is missing or
    older than the source, so that pytest writes it where every worker then finds it.

    A cold collection costs about 9.5 s of CPU on the 2-core VM against 2.5 s warm: each of the workers would
    spend the difference rewriting and compiling the same modules at the same time. An import is how pytest
    rewrites a test module (its hook writes ``__pycache__/NAME.<tag>-pytest-<version>.pyc``); a module that
    fails to import here is left to the worker, which reports it. On a warm tree nothing is imported."""
    import importlib
    tag = f"{sys.implementation.cache_tag}-pytest-{pytest.__version__}.pyc"
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        compiled = path.parent / "__pycache__" / f"{path.stem}.{tag}"
        if compiled.exists() and compiled.stat().st_mtime >= path.stat().st_mtime:
            continue
        try:
            importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
        except (Exception, pytest.skip.Exception):  # noqa: BLE001 - the worker collecting it says what is wrong
            pass


def examples(thorough: int) -> int:
    """How many examples a property test runs: ``thorough`` under ``--thorough`` (by hand, or a nightly job),
    a third of it (at least 25) in the default run, which every change goes through. The strategies are built to
    reach their interesting states early (each test says how); the full count is for hunting rare ones.

    Read when the test module is imported, which is after :func:`pytest_configure`."""
    return thorough if THOROUGH else max(25, thorough // 3)


def weighted(*choices):
    """A hypothesis strategy drawing from each ``(strategy, weight)`` in proportion to its weight.

    ``st.one_of(s, s, t)`` does not weigh ``s`` twice: it keeps one of equal branches, and many strategies are
    cached by their arguments (``st.floats(a, b)`` twice is one object), so they are equal."""
    from hypothesis import strategies as st
    return st.sampled_from([strategy for strategy, weight in choices for _ in range(weight)]).flatmap(lambda s: s)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: two workers a core and one more (at most 8). Much of the suite waits on processes and
    sockets, not the CPU: more workers than cores keep the cores busy meanwhile, but each collects every test
    (about 2.5 s of CPU) and adds to the contention. On the 2-core VM, sampled every 2 s, two a core left the
    cores a third idle for about a fifth of the run; with five or six, sampled each second, they were busy but
    for short dips alike, and five took less time and CPU in each of two runs side by side (113.7 against
    118.2 s wall, 126.3 against 128.1 s).
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` decides instead when set."""
    chosen = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if chosen:
        return int(chosen)
    return min(2 * len(os.sched_getaffinity(0)) + 1, 8)


# The files whose tests each take longest (a run's ``--durations``), started first: the scheduler hands tests
# out in the order below, and a long test started near the end leaves the other workers idle while it finishes.
# The whole-file groups above come first, being the longest chunks. A file of many short tests is not here: its
# tests are dealt out with the rest (``pytest_collection_modifyitems``).
SLOW_FIRST = (
    "tests/integration/test_bridge.py", "tests/integration/test_record_replay.py",
    "tests/integration/test_opportunity_accounting.py", "tests/integration/test_exit_codes.py",
    "tests/unit/test_loadgen.py", "tests/hostile/test_feed_memory.py", "tests/unit/test_extra_venue.py",
    "tests/integration/test_end_to_end.py", "tests/integration/test_clients.py",
    "tests/integration/test_bridge_cross_box.py", "tests/integration/test_top_smoke.py",
)


def pytest_collection_modifyitems(config, items):
    """Tests of :data:`SLOW_FIRST` files first (in its order), then the others with each file's tests spread
    evenly over the rest of the run, and ``serial`` tests last. A :data:`ONE_WORKER` entry naming no collected
    test of a collected file (a test renamed) is an error, not a group silently gone.

    The workers take tests in this order, so neighbours run at the same time. In file order, a file's tests of
    one kind ran together on all five workers: the conformance suite's staleness and keepalive tests, which
    mostly wait on timers, left the cores a third to two thirds idle for several seconds at a time (sampled
    each second). Spread in proportion (not one per file in turn, which leaves the longest files' tests
    together at the end), each file's tests sit among every other file's, the ones that wait beside ones
    that compute.

    A serial test waits until every running test has ended, and the other workers wait with it: mid-run that
    left the cores half idle for about 5 s (sampled each second); last, the wait is the run's tail anyway."""
    rank = {path: n for n, path in enumerate(SLOW_FIRST)}
    count: dict[str, int] = {}
    place = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        place[item.nodeid] = count[path] = count.get(path, 0) + 1

    def key(item):            # the sort is stable: equal keys keep the collection order
        path = item.nodeid.split("::", 1)[0]
        first = path in rank
        # (k - 1/2) / n: the k-th of a file's n tests, at the middle of its share of the run
        return (item.get_closest_marker("serial") is not None, not first,
                rank[path] if first else (place[item.nodeid] - 0.5) / count[path])

    items.sort(key=key)
    files = {item.nodeid.split("::", 1)[0] for item in items}
    named = files | {item.nodeid.split("[", 1)[0] for item in items}
    stale = [key for key in ONE_WORKER if key.split("::", 1)[0] in files and key not in named]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py ONE_WORKER names no test: {', '.join(stale)}")


def pytest_collection_finish(session):
    """What collection made (the modules, the test items, the libraries they import) lives until the run ends:
    frozen, the collections the tests' own allocations set off never walk it again."""
    import gc
    gc.collect()
    gc.freeze()


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: every test on its own, except the :data:`ONE_WORKER` groups, each kept whole."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            group = ONE_WORKER.get(nodeid.split("::", 1)[0]) or ONE_WORKER.get(nodeid.split("[", 1)[0])
            return f"group:{group}" if group else nodeid

    return OneWorkerGroups(config, log)


@pytest.fixture(autouse=True)
def _serial_tests_run_alone(request, tmp_path_factory):
    """A test marked ``serial`` runs while no other test runs, on any xdist worker.

    Every test holds a shared lock on one file for its duration, a ``serial`` test an exclusive one. A second
    lock taken first (a turnstile) keeps a waiting serial test from being starved by the other worker's
    stream of shared locks. Without xdist there is one process and the locks never wait."""
    import fcntl
    base = tmp_path_factory.getbasetemp()
    root = base.parent if base.name.startswith("popen-gw") else base     # shared by all the workers of a run
    exclusive = request.node.get_closest_marker("serial") is not None
    with open(root / "serial.turnstile", "a+") as turnstile, open(root / "serial.lock", "a+") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            if not exclusive:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.fixture
def board_name():
    """A unique shared-memory name; the test fails if the segment is left behind."""
    name = f"pipeline-test-{uuid.uuid4().hex[:10]}"
    yield name
    leftover = Path("/dev/shm") / name
    if leftover.exists():
        leftover.unlink()
        pytest.fail(f"shared memory {name} was left behind")


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def demo_config(board: str, out: Path, venues=("binance", "bybit"), **detector) -> dict:
    instruments = {"binance": ["BTC/USDT", "ETH/USDT"], "bybit": ["BTC/USDT", "ETH/USDT"],
                   "okx": ["BTC/USDT", "ETH/USDT"], "htx": ["BTC/USDT", "ETH/USDT"],
                   "coinbase": ["BTC/USDT", "ETH/USDT"], "kraken": ["BTC/USDT", "ETH/USDT"]}
    return {
        "board": {"name": board, "depth": 5},
        "simulator": {"seed": 11, "update_interval_ms": 50, "dislocation_every_s": 0.5,
                      "dislocation_bps": 60, "dislocation_ms": 200},
        "venues": {v: {"instruments": instruments[v]} for v in venues},
        "detector": {"threshold_bps": 0.0, "staleness_ms": 2000, "output": str(out), **detector},
        "health": {"interval_s": 1.0},
        "reference_data": {"cache_dir": str(out.parent / "rules")},   # a test's cache is its own
        "supervisor": {"restart_backoff_s": 0.1},
    }


def complete_lines(path: Path) -> list[bytes]:
    """The complete lines of an events file so far, without their newlines (none before it exists): a file a
    running pipeline writes may end in a line not yet whole, which is left for the next read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return data[:data.rfind(b"\n") + 1].splitlines()


def complete_records(path: Path) -> list[dict]:
    """The records of :func:`complete_lines`, decoded."""
    import orjson
    return [orjson.loads(line) for line in complete_lines(path)]


def run_cli(*args: str, timeout: float = 60, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def end_run(proc: subprocess.Popen) -> None:
    """Stop a ``run.py`` still running when a test ends early: SIGTERM first, so that the supervisor unlinks its
    board and the failure is reported alone, not as shared memory left behind too; SIGKILL after 30 s."""
    import signal
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def run_until(done, *args: str, timeout: float = 60, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``run.py *args`` until ``done(stdout_so_far)`` holds, then SIGTERM (a clean stop, like Ctrl-C).

    Instead of ``--duration N`` and hoping N seconds were enough on a loaded machine, the run lasts as long as
    its output takes to show what the test needs. Fails after ``timeout`` s without it; a run that ends on its
    own first is returned as it ended."""
    import signal
    import tempfile
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], stdout=out, stderr=err, text=True,
                                cwd=cwd)
        try:
            def seen() -> bool:
                out.seek(0)
                return proc.poll() is not None or done(out.read())
            wait_until(seen, timeout, interval=0.05,
                       message=f"run.py {' '.join(args)} to show what the test waits for")
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        finally:
            end_run(proc)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


async def nats_connect(url: str, **options):
    """A nats-py client of ``url``. nats-py is imported here, on first use, not by the test modules: with aiohttp
    it is about 0.3 s of every test worker's collection otherwise."""
    import nats
    return await nats.connect(url, **options)


def wait_until(predicate, timeout: float, interval: float = 0.01, message: str = "condition"):
    """Call ``predicate`` until it returns something true, and return that; fail after ``timeout`` seconds.

    The one way the tests wait for something to happen: never a fixed sleep. The predicate is called
    once more at the deadline, so a slow machine only makes the test slower, never wrong."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


wait_for = wait_until          # the older name, still imported by a few files


async def async_wait_until(predicate, timeout: float = 10.0, message: str = "condition", interval: float = 0.01):
    """:func:`wait_until` inside an event loop: the loop keeps running (servers, feeds) while it waits.

    The predicate may be a coroutine function (asking a server). (The message comes third here, as the
    scenarios pass it; the interval rarely matters.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(interval)


def run(coro, timeout: float = 60):
    """Run one test scenario (a coroutine) in a fresh event loop, failing it after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def port_holder(host: str = "127.0.0.1") -> socket.socket:
    """A socket holding a TCP port the kernel picked (``holder.getsockname()[1]``) until it is closed.

    It is bound with ``SO_REUSEADDR`` and never listens: a server that also sets ``SO_REUSEADDR`` (Python's
    HTTP servers, the supervisor's start-up probe, nats-server) can bind and listen on the port, while the
    kernel hands it to nobody else (another xdist worker, another test's port 0) as long as the holder is
    open. Never bind, close and hope the port is still free."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind((host, 0))
    return holder


@contextlib.contextmanager
def reserved_port(host: str = "127.0.0.1"):
    """:func:`port_holder` for a ``with`` block: the port, held until the block ends."""
    with port_holder(host) as holder:
        yield holder.getsockname()[1]


class SessionParts(NamedTuple):
    """What :func:`session_for` builds: the session, its in-memory rows, its one connection, its journal."""
    session: object
    sink: object
    conn: object
    journal: list


def session_for(venue, symbols, staleness_ms: float = 1000, depth: int = 5, sink=None, add_unknown: bool = False,
                recv_ns: int = 0, journal_fields=lambda kind, now, fields: (kind, now, fields),
                journal: bool = True) -> SessionParts:
    """A pure :class:`~pipeline.feed.session.FeedSession` for ``venue`` (a name or a loaded venue module) with
    one open connection subscribed to ``symbols`` (native symbols; rows numbered in order).

    ``sink`` defaults to a :class:`~pipeline.feed.session.MemorySink` of ``depth`` levels; ``add_unknown``
    gives rows to symbols the session sees first in a frame (the fuzzers' sessions start with none);
    every journal entry is appended as ``journal_fields(kind, now, fields)`` (``journal=False``: no journal, as in
    a feed whose log is off)."""
    from pipeline.feed.session import FeedSession, MemorySink
    from pipeline.venues import load_venue
    module = load_venue(venue) if isinstance(venue, str) else venue
    sink = MemorySink(depth) if sink is None else sink
    entries: list = []
    session = FeedSession(module, {s: n for n, s in enumerate(symbols)}, depth, int(staleness_ms * 1e6), sink,
                          journal=(lambda kind, now, fields: entries.append(journal_fields(kind, now, fields)))
                          if journal else None, add_unknown=add_unknown)
    return SessionParts(session, sink, session.connection_opened(list(symbols), recv_ns), entries)
