"""Writing output files safely: never half-written, never onto something that isn't a regular file.

`atomic_output(path)` writes to a temporary file beside `path` and renames it into place only when the
block succeeds; `atomic_outputs()` does the same for files that belong together (an ONNX model and its
external data), renaming them in order under an flock on their directory and running clean-ups (old
data files) under that lock, so concurrent writers of one path never remove each other's live files.
The rules (docs/robustness.md):

- only a regular file (or a path that does not exist yet) is replaced; devices, FIFOs, sockets,
  directories, anything under /dev/ or /proc/ (`/dev/stdout` included) and `-` are refused with a
  UsageError — graphformer never writes output to stdout through `-o`;
- a symlink is written through: its target is replaced and the link stays;
- a new file gets 0666 & ~umask, like any other tool's output; an overwritten file keeps its mode;
- an OSError while writing or renaming (disk full, ...) is a UsageError naming the file and the reason;
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

try:
    import fcntl
except ImportError:  # not POSIX: files are still renamed atomically, without the directory lock
    fcntl = None

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
    with atomic_outputs() as out:
        with out.open(path, mode) as fh:
            yield fh


@contextmanager
def atomic_path(path: str):
    """The path of a temp file beside `path` (for writers that take a file name), renamed into place only
    if the block succeeds. The writer must write into that file, not replace it: a writer that renames
    its own temp file over it (safetensors' `save_file`) loses the mode and leaves its temp behind."""
    with atomic_outputs() as out:
        yield out.path(path)


@contextmanager
def atomic_outputs():
    """Several outputs that appear together or not at all: `open` / `path` give temp files, renamed into
    place in the order they were asked for, under a lock on their directory, when the block succeeds;
    then the `after_commit` callbacks run, under the same lock. On failure every temp is removed, and a
    file already renamed that did not exist before is removed again (a data file whose model never
    switched). An OSError (disk full, read-only) becomes a UsageError naming the file and the reason."""
    group = _Group()
    with _terminate_as_exception():
        try:
            yield group
            group.commit()
        except BaseException as e:
            group.discard()
            if isinstance(e, OSError):  # disk full, ...: the old files are untouched
                raise UsageError(f"cannot write `{group.current}`: {_reason(e)}") from None
            raise


class _Output:
    def __init__(self, shown: str, tmp: str, final):
        self.shown, self.tmp, self.final, self.fh = shown, tmp, final, None
        self.placed: str | None = None  # the target, once renamed there and new


class _Group:
    """The files of one `atomic_outputs` block (see there)."""

    def __init__(self):
        self._outputs: list[_Output] = []
        self._after: list = []
        self._committed = False
        self.current = ""   # the file being written, for messages

    def open(self, path: str, mode: str = "wb", final=None, like: str | None = None):
        """A file object on a new temp file beside `path`; see `path` for `final` and `like`."""
        out, fd = self._add(path, final, like)
        out.fh = os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8")
        return out.fh

    def path(self, path: str, final=None, like: str | None = None) -> str:
        """A new temp file beside `path`, to be renamed to `path` (or to `final()`, asked at the commit: a
        content-addressed name). Its mode is `like`'s (default: `path`'s) where that file exists, else
        0666 & ~umask."""
        out, fd = self._add(path, final, like)
        os.close(fd)
        return out.tmp

    def after_commit(self, fn) -> None:
        """Run `fn()` once every file is in place, still holding the directory lock (only when the lock
        could be taken: a clean-up that relies on knowing what is live must not race other writers)."""
        self._after.append(fn)

    def _add(self, path: str, final, like: str | None) -> tuple[_Output, int]:
        shown = os.fspath(path)
        self.current = shown
        real = resolve_output(shown)
        directory, name = os.path.split(real)
        clean_stale(directory, name)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        except OSError as e:  # a read-only directory, no space for even an empty file
            raise UsageError(f"cannot write `{shown}`: {_reason(e)}") from None
        out = _Output(shown, tmp, final or (lambda: real))
        self._outputs.append(out)
        keep = _mode_for(resolve_output(like) if like else real)
        if keep is not None:
            os.chmod(tmp, keep)
        return out, fd

    def commit(self) -> None:
        for out in self._outputs:  # a full disk may only show when the last buffer is flushed
            self.current = out.shown
            if out.fh is not None:
                out.fh.close()
        directories = sorted({os.path.dirname(out.tmp) for out in self._outputs})
        with _locked(directories) as locked:
            for out in self._outputs:
                self.current = out.shown
                target = out.final()
                resolve_output(target)  # still a regular file (or nothing) at the moment of the switch
                new = not os.path.lexists(target)
                os.replace(out.tmp, target)
                out.placed = target if new else None
            self._committed = True
            if locked:
                for fn in self._after:
                    fn()

    def discard(self) -> None:
        for out in self._outputs:
            if out.fh is not None:
                try:
                    out.fh.close()
                except Exception:  # the full disk again, or a closed file: the temp goes anyway
                    pass
        if self._committed:
            return  # everything is in place: only an after-commit clean-up was interrupted
        for out in self._outputs:
            for leftover in (out.tmp, out.placed):
                if leftover is not None:
                    try:
                        os.unlink(leftover)
                    except OSError:
                        pass


@contextmanager
def _locked(directories: list[str]):
    """Hold an exclusive flock on each directory (sorted, so two groups can't deadlock); yields whether
    every lock was taken. Where directories can't be locked, the renames still happen, unlocked."""
    fds, ok = [], True
    try:
        for directory in directories:
            try:
                fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except OSError:
                ok = False
                continue
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except (OSError, AttributeError):  # AttributeError: no fcntl
                ok = False
        yield ok
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock
