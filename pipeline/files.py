"""Files the pipeline writes, and files it is handed: never through a link.

Events, recordings and logs hold what a trader would not publish (opportunities, every frame received,
error text): they are created ``0640`` (less whatever the umask removes, never more). A path whose last
component is a symbolic link is refused (``O_NOFOLLOW``): a link planted where we write could send our
bytes over a file of the attacker's choosing. A file we are handed to read (a capture to import) is
opened the same way, and only if it is a regular file: a FIFO or a device would block or never end.
"""
from __future__ import annotations

import os
import stat

FILE_MODE = 0o640


def open_for_writing(path: str, *, append: bool = False, truncate: bool = False, exclusive: bool = False,
                     buffering: int = -1):
    """A binary file object for writing ``path``, created :data:`FILE_MODE`; raises OSError (ELOOP for a link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    if append:
        flags |= os.O_APPEND
    if truncate:
        flags |= os.O_TRUNC
    if exclusive:
        flags |= os.O_EXCL
    fd = os.open(path, flags, FILE_MODE)
    try:
        return os.fdopen(fd, "ab" if append else "wb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


class NotARegularFile(OSError):
    """A path handed to us for reading names a FIFO, a device, a directory: not a file to read to its end."""


def open_for_reading(path: str):
    """A binary file object for reading ``path``: never through a symbolic link (OSError ELOOP), and only a
    regular file (:class:`NotARegularFile`). Opened non-blocking, so a FIFO nobody writes cannot hang the check."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
