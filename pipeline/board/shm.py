"""Lifetime of the shared-memory segment: create, attach, verify, destroy.

Only the supervisor creates and unlinks the segment. Every other process
attaches, and attaching verifies the header (magic, layout version, depth,
row size, counts) so a process built with another layout fails with a message
naming what differs instead of reading garbage.

Python 3.11 caveat (CPython issues 82300 and 104291): ``SharedMemory(name=...)``
registers the segment with the process's resource tracker even when it only
attaches, and that tracker unlinks the *live* segment when the attaching
process exits (``track=False`` exists only from 3.13). Unregistering right
after attaching is not enough: forked children share their parent's tracker,
which keeps one set of names, so two children's REGISTER/UNREGISTER pairs can
interleave and the second UNREGISTER fails inside the tracker. So no process
registers the segment at all: :func:`_open` suppresses the registration
(``track=False`` where it exists), and :func:`unlink` calls ``shm_unlink``
itself, so the tracker is never started. The supervisor owns unlinking
explicitly (normal exit, signals), and a segment left behind by a supervisor
killed with SIGKILL is found by its fixed name and removed by the next start
(:func:`remove_leftover`).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from _posixshmem import shm_unlink as _shm_unlink  # the call SharedMemory.unlink makes, without the tracker
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from pipeline.board.layout import (
    HEADER_DTYPE,
    LANE_DTYPE,
    LAYOUT_VERSION,
    MAGIC,
    PAIRS_DTYPE,
    PROC_DTYPE,
    RULES_DTYPE,
    BoardGeometry,
)
from pipeline.errors import BoardError, BoardInUseError, LayoutMismatchError

DECISION_ENTRIES = 4096    # the decision ring of a board created without a size (tests, benchmarks, replay)
DECISION_FILLS = 4


@contextlib.contextmanager
def _registration_suppressed():
    # SharedMemory.__init__ looks resource_tracker.register up at call time; the
    # swap lasts for one constructor call, made while the process is single-threaded
    original = resource_tracker.register
    resource_tracker.register = lambda name, rtype: None
    try:
        yield
    finally:
        resource_tracker.register = original


SHM_DIR = "/dev/shm"       # where POSIX shared memory lives on Linux (shm_open(name) is SHM_DIR/name)


def foreign_segment(name: str) -> str | None:
    """Why an existing segment called ``name`` is not ours to trust or remove, or None (ours, or none).

    A segment another user created could carry a fake board with a valid header (quotes the detector would
    trade on), and removing it is not ours to do; one that other users may write could be changed under us.
    """
    try:
        st = os.stat(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"shared memory segment {name!r} cannot be examined ({exc.strerror})"
    if st.st_uid != os.geteuid():
        return (f"shared memory segment {name!r} belongs to {_user(st.st_uid)}, not to this user: it is not "
                f"ours to trust or remove; choose another board.name")
    if st.st_mode & 0o022:
        return (f"shared memory segment {name!r} may be written by other users (mode {st.st_mode & 0o777:o}): "
                f"its quotes cannot be trusted; remove it (rm {os.path.join(SHM_DIR, name)}) or choose another "
                f"board.name")
    return None


def _user(uid: int) -> str:
    try:
        import pwd
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _open(name: str, create: bool = False, size: int = 0) -> SharedMemory:
    """Open or create a segment without registering it with the resource tracker."""
    if sys.version_info >= (3, 13):
        return SharedMemory(name=name, create=create, size=size, track=False)
    with _registration_suppressed():
        return SharedMemory(name=name, create=create, size=size)


class Board:
    """A mapped quote board. Use :meth:`create` (supervisor) or :meth:`attach`."""

    def __init__(self, shm: SharedMemory, geometry: BoardGeometry, creator: bool):
        self._shm = shm
        self.name = shm.name
        self.geometry = geometry
        self.creator = creator
        self.buf = shm.buf
        self.header = np.ndarray((), HEADER_DTYPE, self.buf, 0)
        self.procs = np.ndarray((geometry.n_procs,), PROC_DTYPE, self.buf, geometry.procs_offset)
        self.rows = np.ndarray((geometry.n_rows,), geometry.row, self.buf, geometry.rows_offset)
        self.pairs = np.ndarray((), PAIRS_DTYPE, self.buf, geometry.pairs_offset)["opened"]
        # which change lane (process slot + 1, 0: none) each row's writer logs to; see pipeline.board.layout
        self.row_lanes = np.ndarray((geometry.n_rows,), "<u2", self.buf, geometry.row_lanes_offset)
        self.lanes = np.ndarray((geometry.n_procs,), LANE_DTYPE, self.buf, geometry.lanes_offset)
        # each row's trading rules, written by the row's writer (pipeline.board.rules)
        self.rules = np.ndarray((geometry.n_rows,), RULES_DTYPE, self.buf, geometry.rules_offset)

    def assign_lane(self, rows, slot: int) -> None:
        """Log the changes of ``rows`` in the change lane of process ``slot`` (the process that writes them).

        The board's creator calls this before any writer of those rows starts; a lane's rows must all
        belong to one writer, since its counter has exactly one writer.
        """
        if not 0 <= slot < self.geometry.n_procs:
            raise BoardError(f"lane {slot} is outside the board (0..{self.geometry.n_procs - 1})")
        for row in rows:
            self.row_lanes[row] = slot + 1

    # -- lifetime -------------------------------------------------------
    @classmethod
    def create(cls, name: str, n_rows: int, depth: int, n_procs: int, decision_entries: int = DECISION_ENTRIES,
               decision_fills: int = DECISION_FILLS) -> Board:
        """A new board; ``decision_entries`` slots in its decision ring (0: none), each holding up to
        ``decision_fills`` shadow fills (the supervisor sizes both from the config through the plan)."""
        geometry = BoardGeometry(n_rows=n_rows, depth=depth, n_procs=n_procs, decision_entries=decision_entries,
                                 decision_fills=decision_fills)
        try:
            shm = _open(name, create=True, size=geometry.size)
        except FileExistsError as exc:
            raise BoardError(f"shared memory segment {name!r} already exists; "
                             "remove it with remove_leftover() first") from exc
        board = cls(shm, geometry, creator=True)
        header = board.header
        header["version"] = LAYOUT_VERSION
        header["n_rows"] = n_rows
        header["depth"] = depth
        header["row_size"] = geometry.row.itemsize
        header["n_procs"] = n_procs
        header["proc_size"] = PROC_DTYPE.itemsize
        header["decision_entries"] = decision_entries
        header["decision_fills"] = decision_fills
        header["supervisor_pid"] = os.getpid()
        header["created_ns"] = time.time_ns()
        # magic last: a reader that sees the magic sees a complete header
        header["magic"] = MAGIC
        return board

    @classmethod
    def attach(cls, name: str, expected_depth: int | None = None) -> Board:
        problem = foreign_segment(name)
        if problem:
            raise BoardError(problem)
        try:
            shm = _open(name)
        except FileNotFoundError as exc:
            raise BoardError(f"no quote board named {name!r} (is the supervisor running?)") from exc
        except PermissionError as exc:
            raise BoardError(f"shared memory segment {name!r}: {exc.strerror}") from None
        except ValueError:      # "cannot mmap an empty file": created by the supervisor, not sized yet
            raise BoardError(f"quote board {name!r} is being created (not sized yet): try again") from None
        try:
            geometry = _verify(shm, expected_depth)
        except BaseException:
            shm.close()
            raise
        return cls(shm, geometry, creator=False)

    def close(self) -> None:
        """Unmap. Views handed out earlier must not be used afterwards."""
        # drop exported buffers before closing
        self.header = self.procs = self.rows = self.pairs = self.row_lanes = self.lanes = self.rules = None
        self.buf = None
        try:
            self._shm.close()
        except BufferError:
            # A reader or writer still holds a view of the mapping. The mapping
            # then lives until the last view is dropped; make sure
            # SharedMemory.__del__ does not try (and complain) again.
            shm = self._shm
            shm._buf = None  # noqa: SLF001
            shm._mmap = None  # noqa: SLF001
            if shm._fd >= 0:  # noqa: SLF001
                os.close(shm._fd)  # noqa: SLF001
                shm._fd = -1  # noqa: SLF001

    def destroy(self) -> None:
        """Unmap and unlink. Supervisor only."""
        if not self.creator:
            raise BoardError("only the process that created the board may unlink it")
        self.close()
        unlink(self.name)

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc) -> None:
        self.destroy() if self.creator else self.close()


def _verify(shm: SharedMemory, expected_depth: int | None) -> BoardGeometry:
    if shm.size < HEADER_DTYPE.itemsize:
        raise LayoutMismatchError(f"segment {shm.name!r} is {shm.size} bytes, smaller than a board header")
    header = np.ndarray((), HEADER_DTYPE, shm.buf, 0).copy()
    problems = []
    if int(header["magic"]) != MAGIC:
        raise LayoutMismatchError(f"segment {shm.name!r} is not a quote board (magic {int(header['magic']):#x})")
    if int(header["version"]) != LAYOUT_VERSION:
        problems.append(f"layout version {int(header['version'])} (this build: {LAYOUT_VERSION})")
    depth = int(header["depth"])
    if expected_depth is not None and depth != expected_depth:
        problems.append(f"depth {depth} (this process expects {expected_depth})")
    try:
        geometry = BoardGeometry(n_rows=int(header["n_rows"]), depth=depth, n_procs=int(header["n_procs"]),
                                 decision_entries=int(header["decision_entries"]),
                                 decision_fills=int(header["decision_fills"]))
        row_size = geometry.row.itemsize
    except ValueError as exc:
        raise LayoutMismatchError(f"segment {shm.name!r}: {exc}") from exc
    if int(header["row_size"]) != row_size:
        problems.append(f"row size {int(header['row_size'])} bytes (this build: {row_size} for depth {depth})")
    if int(header["proc_size"]) != PROC_DTYPE.itemsize:
        problems.append(f"process slot size {int(header['proc_size'])} (this build: {PROC_DTYPE.itemsize})")
    if not problems and shm.size < geometry.size:
        problems.append(f"segment is {shm.size} bytes, header implies {geometry.size}")
    if problems:
        raise LayoutMismatchError(
            f"quote board {shm.name!r} was built with another layout: " + "; ".join(problems)
            + ". Stop the running pipeline (or remove the segment) and start again with one build."
        )
    return geometry


def unlink(name: str) -> None:
    """Unlink a segment by name without involving the resource tracker.

    ``SharedMemory.unlink()`` unlinks and then tells the process's resource tracker, starting one (a second
    Python interpreter) if none runs yet, only to forget a name it was never given (:func:`_open`). The
    unlink itself is one ``shm_unlink``, made here directly."""
    try:
        _shm_unlink("/" + name)
    except FileNotFoundError:
        return


def remove_leftover(name: str) -> str | None:
    """Remove a segment left by a supervisor that died without cleaning up.

    Returns a message describing what was removed, None when there was
    nothing. Raises :class:`BoardInUseError` when the segment belongs to a
    supervisor that is still alive, and :class:`BoardError` when it is not ours (:func:`foreign_segment`).
    """
    problem = foreign_segment(name)
    if problem:
        raise BoardError(problem)
    try:
        shm = _open(name)
    except FileNotFoundError:
        return None
    owner_pid = 0
    try:
        if shm.size >= HEADER_DTYPE.itemsize:
            header = np.ndarray((), HEADER_DTYPE, shm.buf, 0).copy()
            if int(header["magic"]) == MAGIC:
                owner_pid = int(header["supervisor_pid"])
    finally:
        shm.close()
    if owner_pid and owner_pid != os.getpid() and pid_alive(owner_pid):
        raise BoardInUseError(
            f"quote board {name!r} belongs to supervisor pid {owner_pid}, which is still running; "
            "stop it first or use another board.name")
    unlink(name)
    return f"removed leftover shared memory {name!r} (from supervisor pid {owner_pid or 'unknown'}, no longer running)"


def running_boards(directory: str = "/dev/shm") -> list[str]:
    """Names of the quote boards a live supervisor holds: our own segments (:func:`foreign_segment`) with
    the board's header and a running ``supervisor_pid``, sorted."""
    names = []
    try:
        candidates = sorted(os.listdir(directory))
    except OSError:
        return names
    for name in candidates:
        if foreign_segment(name):
            continue
        try:
            shm = _open(name)
        except (OSError, ValueError):
            continue
        try:
            if shm.size < HEADER_DTYPE.itemsize:
                continue
            header = np.ndarray((), HEADER_DTYPE, shm.buf, 0).copy()
            if int(header["magic"]) == MAGIC and pid_alive(int(header["supervisor_pid"])):
                names.append(name)
        finally:
            shm.close()
    return names


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except OSError:
        return False
