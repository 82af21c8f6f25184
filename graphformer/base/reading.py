"""Reading input files: regular files only, never more than a limit, never blocking on a FIFO, and
never outside the directory the user named.

Below every layer (only `errors` is imported): every input file graphformer reads goes through here —
specs (the YAML loader and the diagnostic renderer's re-read of source lines), a checkpoint's
config.json, its shard index and weight files, and tokenizer.json. The limits per kind are in `LIMITS`
and docs/robustness.md ("Reading").
"""
from __future__ import annotations

import json
import os
import stat

from .errors import UsageError

MB = 1 << 20

# The most bytes read of each kind of input file. Real files are far below: a config.json is a few KB
# (an ImageNet-21k id2label ~1 MB), Llama-3's tokenizer.json 9 MB, a 400B model's shard index 100 KB,
# a safetensors header ~1 KB per tensor.
LIMITS = {
    "spec": 2_000_000,          # yamlload.MAX_FILE_BYTES says so as a diagnostic (GF003)
    "config": 4 * MB,           # config.json, generation_config.json
    "tokenizer": 64 * MB,       # tokenizer.json
    "shard index": 16 * MB,     # model.safetensors.index.json, pytorch_model.bin.index.json
    "safetensors header": 64 * MB,
}


class FileProblem(UsageError):
    """A file could not be read (missing, a directory, a device or FIFO, no permission, too big, a
    name that leaves its directory). A usage or environment problem: exit 2."""


class FileTooBig(Exception):
    def __init__(self, size: int):
        super().__init__(f"{size} bytes")
        self.size = size


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """A file descriptor of a regular file, and its stat; FileProblem for anything else. Opened
    non-blocking and checked after opening, so a FIFO can't hang us and a file swapped in after a check
    can't either. The caller closes the descriptor."""
    shown = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileProblem(f"cannot read `{shown}`: no such file") from None
    except PermissionError:
        raise FileProblem(f"cannot read `{shown}`: permission denied") from None
    except IsADirectoryError:
        raise FileProblem(f"cannot read `{shown}`: it is a directory") from None
    except (OSError, ValueError, TypeError) as exc:
        raise FileProblem(f"cannot read `{shown}`: {_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileProblem(f"cannot read `{shown}`: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(f"cannot read `{shown}`: not a regular file (a device, FIFO or socket)")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str, limit: int) -> bytes:
    """At most `limit` + 1 bytes of a regular file; FileProblem for anything else, FileTooBig when its
    size is over `limit`."""
    fd, st = open_regular(path)
    try:
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
        raise FileProblem(f"cannot read `{os.fspath(path)}`: {_reason(exc)}") from None
    finally:
        os.close(fd)


def read_input(path: str, kind: str) -> bytes:
    """The bytes of an input file of `kind` (a key of LIMITS); FileProblem when it can't be read or is
    over the kind's limit."""
    limit = LIMITS[kind]
    try:
        data = read_regular_file(path, limit)
    except FileTooBig as e:
        raise FileProblem(f"cannot read `{os.fspath(path)}`: it is {e.size:,} bytes; the limit for a {kind} "
                          f"file is {limit:,}") from None
    if len(data) > limit:
        raise FileProblem(f"cannot read `{os.fspath(path)}`: it is over the limit of {limit:,} bytes for a "
                          f"{kind} file")
    return data


def read_text(path: str, kind: str) -> str:
    try:
        return read_input(path, kind).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileProblem(f"cannot read `{os.fspath(path)}`: not UTF-8 text (byte {e.start})") from None


def read_json(path: str, kind: str):
    """A JSON file of `kind`, parsed; FileProblem for a file that isn't JSON, or nests too deeply for
    the parser."""
    text = read_text(path, kind)
    try:
        return json.loads(text)
    except RecursionError:
        raise FileProblem(f"cannot read `{os.fspath(path)}` as JSON: it nests too deeply") from None
    except ValueError as e:   # JSONDecodeError, and an integer of more digits than Python converts
        raise FileProblem(f"cannot read `{os.fspath(path)}` as JSON: {e}") from None


def inside(directory: str, name) -> str:
    """`directory`/`name` for a file a directory's own data names (a shard in an index, config.json):
    FileProblem for a name that is not a plain relative path, has a `..` component, or resolves (through
    symbolic links) outside `directory`. The one exception is the Hugging Face cache's layout, where
    `<repo>/snapshots/<revision>/` holds links into `<repo>/blobs/`."""
    shown = os.fspath(directory)
    if not isinstance(name, str) or not name or "\0" in name:
        raise FileProblem(f"`{shown}` names a file by {_short(name)}, which is not a file name")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise FileProblem(f"`{shown}` names the file {_short(name)} by an absolute path: only names inside "
                          f"the directory are read")
    if ".." in parts:
        raise FileProblem(f"`{shown}` names the file {_short(name)}, which leaves the directory (`..`)")
    path = os.path.join(directory, name)
    root = os.path.realpath(directory)
    real = os.path.realpath(path)
    roots = [root]
    if os.path.basename(os.path.dirname(root)) == "snapshots":   # the Hugging Face cache
        roots.append(os.path.join(os.path.dirname(os.path.dirname(root)), "blobs"))
    if not any(_within(real, r) for r in roots):
        raise FileProblem(f"`{path}` is a link to a file outside `{shown}`: only files inside the directory "
                          f"are read")
    return path


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _short(value) -> str:
    text = json.dumps(value) if isinstance(value, str) else f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "…"


def _reason(exc: Exception) -> str:
    return (getattr(exc, "strerror", None) or str(exc)).lower()
