"""Files the pipeline writes: for the owner and its group only, and never through a link.

Events, recordings and logs hold what a trader would not publish (opportunities, every frame received,
error text): they are created ``0640`` (less whatever the umask removes, never more). A path whose last
component is a symbolic link is refused (``O_NOFOLLOW``): a link planted where we write could send our
bytes over a file of the attacker's choosing.
"""
from __future__ import annotations

import os

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
