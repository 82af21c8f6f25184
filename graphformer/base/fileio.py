"""Writing output files safely: never half-written, never onto something that isn't a regular file.

`atomic_output(path)` writes to a temporary file beside `path` and renames it into place only when the
block succeeds. The rules (docs/robustness.md):

- only a regular file (or a path that does not exist yet) is replaced; devices, FIFOs, sockets,
  directories, anything under /dev/ or /proc/ (`/dev/stdout` included) and `-` are refused with a
  UsageError — graphformer never writes output to stdout through `-o`;
- a symlink is written through: its target is replaced and the link stays;
- a new file gets 0666 & ~umask, like any other tool's output; an overwritten file keeps its mode;
- the temporary file is removed on any exception, on Ctrl-C and on SIGTERM; one left behind by
  SIGKILL is named `.gf-tmp-<pid>-<random>-<name>` and is removed by the next write beside it once
  its process is gone.

Torch-free and below every layer: backends and commands both write through here.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import stat
import threading
from contextlib import contextmanager

from .errors import UsageError

TMP_PREFIX = ".gf-tmp-"
_TMP_RE = re.compile(re.escape(TMP_PREFIX) + r"(\d+)-[0-9a-f]{8}-")


class Terminated(BaseException):
    """SIGTERM arrived while an output was being written (raised so that cleanup runs)."""


def _reason(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def resolve_output(path: str) -> str:
    """The file that writing `path` will replace (a symlink's target), or UsageError if it can't be one."""
    shown = os.fspath(path)
    if shown in ("", "-"):
        raise UsageError(f"cannot write `{shown}`: give a file name (output is never written to stdout "
                         "through -o)")
    if os.path.abspath(shown).startswith(("/dev/", "/proc/")):  # /dev/stdout, /proc/self/fd/1: streams
        raise UsageError(f"cannot write `{shown}`: it is a device or process file; graphformer only replaces "
                         "regular files (write to a file, or omit -o where a command prints to stdout)")
    real = os.path.realpath(shown)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UsageError(f"cannot write `{shown}`: {_reason(e)}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"cannot write `{shown}`: it is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"cannot write `{shown}`: it is not a regular file (a device, FIFO or socket); "
                         "graphformer only replaces regular files")
    directory = os.path.dirname(real) or "."
    if not os.path.isdir(directory):
        raise UsageError(f"cannot write `{shown}`: directory `{os.path.dirname(os.path.abspath(shown))}` "
                         "does not exist")
    return real


def clean_stale(directory: str, name: str) -> None:
    """Remove temporary files for `name` in `directory` whose writing process no longer exists."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        m = _TMP_RE.match(entry)
        if not m or not entry.endswith("-" + name) or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(os.path.join(directory, entry))
        except OSError:
            pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's live process (or unknowable): leave its file alone
    return True


@contextmanager
def _terminate_as_exception():
    """On the main thread, turn SIGTERM into an exception for the block, so `finally` clauses run."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield  # someone installed their own handler (or we can't): respect it
        return

    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _mode_for(real: str) -> int | None:
    try:
        return stat.S_IMODE(os.stat(real).st_mode)
    except OSError:
        return None


@contextmanager
def atomic_output(path: str, mode: str = "wb"):
    """Write to a temp file beside `path` and rename it into place only if the block succeeds."""
    shown = os.fspath(path)
    real = resolve_output(shown)
    with _atomic(shown, real, lambda: real) as (fd, _):
        with os.fdopen(fd, mode) as fh:
            yield fh


@contextmanager
def atomic_path(path: str):
    """The path of a temp file beside `path` (for writers that take a file name, like safetensors'),
    renamed into place only if the block succeeds."""
    shown = os.fspath(path)
    real = resolve_output(shown)
    with _atomic(shown, real, lambda: real) as (fd, tmp):
        os.close(fd)
        yield tmp


@contextmanager
def atomic_output_named(directory: str, name: str, final_name, mode: str = "wb"):
    """Like `atomic_output`, but the file's name is `final_name()`, asked once the block has written it
    (a content-addressed name). `name` stands for it in messages and in the temp file's name."""
    shown = os.path.join(directory, name)
    resolve_output(shown)
    with _atomic(shown, shown, lambda: os.path.join(directory, final_name())) as (fd, _):
        with os.fdopen(fd, mode) as fh:
            yield fh


@contextmanager
def _atomic(shown: str, real: str, final):
    """(fd, temp path) of a new temp file beside `real`; renamed to `final()` if the block succeeds."""
    directory, name = os.path.split(real)
    clean_stale(directory, name)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}")
    with _terminate_as_exception():
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        except OSError as e:  # a read-only directory, no space for even an empty file
            raise UsageError(f"cannot write `{shown}`: {_reason(e)}") from None
        try:
            keep = _mode_for(real)
            if keep is not None:
                os.chmod(tmp, keep)
            yield fd, tmp
            target = final()
            resolve_output(target)  # still a regular file (or nothing) at the moment of the switch
            os.replace(tmp, target)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(e, OSError):  # disk full, ...: the old file is untouched
                raise UsageError(f"cannot write `{shown}`: {_reason(e)}") from None
            raise
