"""Memory needed before allocating it: a model or a batch that cannot fit is a usage error (exit 2)
naming the bytes needed and available, not an out-of-memory kill or a MemoryError traceback.

The estimates are lower bounds (weights; inputs plus the largest single activation), so a refusal
is certain to be right; what they miss is still caught when the allocation fails (`is_out_of_memory`).
Torch-free: the sizes come from the IR, the available memory from the OS (or torch for CUDA).
"""
from __future__ import annotations

import math

from ..base.errors import UsageError
from ..ops.base import dtype_bytes



def param_bytes(ir, dtype: str | None = None) -> int:
    from .summary import total_params
    return total_params(ir) * dtype_bytes(dtype)


def forward_bytes(ir, dims: dict[str, int], dtype: str | None = None, partial: bool = False) -> int:
    """The graph inputs plus the largest node output at `dims`: a forward needs at least that. `partial`:
    `dims` binds only some symbols (those of the inputs a caller feeds); nodes over others count 0."""
    width = dtype_bytes(dtype)

    def size(node) -> int:
        if node.shape is None or (partial and any(d.symbols - dims.keys() for d in node.shape.shape)):
            return 0
        n = math.prod(d.evaluate(dims) for d in node.shape.shape)
        return n * (dtype_bytes(node.shape.dtype) if node.shape.dtype != "float32" else width)

    nodes = ir.nodes()
    inputs = sum(size(n) for n in nodes if n.op == "input")
    return inputs + max((size(n) for n in nodes if n.op != "input"), default=0)


def available_bytes(device: str = "cpu") -> int | None:
    """Memory that an allocation on `device` can still get, or None if unknown (then nothing is refused)."""
    if device.startswith("cuda"):
        try:
            import torch
            return torch.cuda.mem_get_info(torch.device(device))[0]
        except Exception:  # no CUDA, a bad index: the backend reports that itself
            return None
    if device != "cpu":
        return None
    host = _meminfo()
    limit = _cgroup_headroom()
    known = [v for v in (host, limit) if v is not None]
    return min(known) if known else None


def _meminfo() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            fields = dict(line.split(":", 1) for line in fh.read(1 << 16).splitlines() if ":" in line)
        kb = int(fields["MemAvailable"].split()[0]) + int(fields.get("SwapFree", "0 kB").split()[0])
        return kb * 1024
    except (OSError, KeyError, ValueError):
        return None


def _cgroup_headroom() -> int | None:
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit, encoding="ascii") as fh:
                cap = fh.read(64).strip()
            with open(usage, encoding="ascii") as fh:
                used = int(fh.read(64).strip())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 1 << 60:  # "max", or v1's "unlimited" 2^63
            return max(0, int(cap) - used)
    return None


SMALLER = "use a smaller preset or --dims, or --device meta to check shapes without allocating"


def require(needed: int, what: str, device: str = "cpu", hint: str = SMALLER) -> None:
    """UsageError unless `needed` bytes are available on `device`; `hint` says how to need less."""
    avail = available_bytes(device)
    if avail is not None and needed > avail:
        raise UsageError(f"{what} needs at least {needed:,} bytes ({_human(needed)}) but only {avail:,} "
                         f"({_human(avail)}) are available on {device}; {hint}")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1000
    return ""


def is_out_of_memory(exc: BaseException) -> bool:
    """A failed allocation (host or device) as torch or Python reports it."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "cannot allocate memory" in text)
