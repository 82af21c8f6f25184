"""Reading input files: regular files only, never more than a limit, never blocking on a FIFO.

Below every layer (no graphformer imports): the YAML loader and the diagnostic renderer's re-read of
source lines both read through here.
"""
from __future__ import annotations

import os
import stat


class FileProblem(Exception):
    """A file could not be read (missing, a directory, a device or FIFO, no permission)."""


class FileTooBig(Exception):
    def __init__(self, size: int):
        super().__init__(f"{size} bytes")
        self.size = size


def read_regular_file(path: str, limit: int) -> bytes:
    """At most `limit` + 1 bytes of a regular file; FileProblem for anything else. Opened non-blocking
    and checked after opening, so a FIFO can't hang us and a file swapped in after a check can't either."""
    shown = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileProblem(f"cannot read `{shown}`: no such file") from None
    except PermissionError:
        raise FileProblem(f"cannot read `{shown}`: permission denied") from None
    except IsADirectoryError:
        raise FileProblem(f"cannot read `{shown}`: it is a directory") from None
    except (OSError, ValueError) as exc:
        raise FileProblem(f"cannot read `{shown}`: {_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileProblem(f"cannot read `{shown}`: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(f"cannot read `{shown}`: not a regular file (a device, FIFO or socket)")
        if st.st_size > limit:  # checked before reading, so a huge file costs nothing
            raise FileTooBig(st.st_size)
        chunks, left = [], limit + 1  # /proc files report size 0: the read itself is bounded too
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise FileProblem(f"cannot read `{shown}`: {_reason(exc)}") from None
    finally:
        os.close(fd)


def _reason(exc: Exception) -> str:
    return (getattr(exc, "strerror", None) or str(exc)).lower()


