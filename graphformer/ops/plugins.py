"""Ops from installed packages: the `graphformer.ops` entry-point group (docs/plugins.md).

An entry point names a `Plugin`: its ops (`OpDef`s, or `PluginOpDef`s whose `sequence`/`tp` traits may stay
unknown) and the modules holding its torch and ONNX lowerings (`@lowers("op")`, as the built-in ones).

Nothing runs by surprise: a spec never names code. Only packages installed in the environment register ops;
they are loaded lazily, once, on the registry's first read (`base.Registry`), and a plugin's lowering
modules only when a backend first looks a lowering up (`LoweringTable`), so `check` never imports torch
through a plugin. A broken plugin (it fails to import, its object is not a `Plugin`, an op is malformed or
takes a name already taken) is skipped whole, with a warning naming it (GF257, `problems()`); graphformer
goes on without it. Nothing here imports torch.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from .base import Attrs, LazyDict, OpDef, PluginOpDef, same_shape, numel

GROUP = "graphformer.ops"
BUILTIN = "builtin"


@dataclass(frozen=True)
class Plugin:
    """What a `graphformer.ops` entry point names: ops, and the modules of their lowerings (imported only by
    the backend that needs them; None: the plugin has no lowering for that backend)."""

    ops: tuple[OpDef, ...]
    torch: str | None = None
    onnx: str | None = None


@dataclass(frozen=True)
class Origin:
    package: str        # the distribution that installed the entry point
    version: str
    entry: str          # the entry point's name
    plugin: Plugin = field(repr=False)

    def __str__(self) -> str:
        return f"{self.package} {self.version}"


ORIGINS: dict[str, Origin] = {}     # plugin op name → where it comes from
_PROBLEMS: list[str] = []           # one line per plugin skipped, or lowering module that failed
_TABLES: list["LoweringTable"] = []


def origin(op: str) -> str:
    """`builtin`, or the package (and version) that installed op `op`."""
    from . import REGISTRY
    REGISTRY._load()   # loads the plugins if nothing has read the registry yet
    o = ORIGINS.get(op)
    return str(o) if o else BUILTIN


def is_plugin(op: str) -> bool:
    from . import REGISTRY
    return op in REGISTRY and op in ORIGINS


def problems() -> list[str]:
    """Why plugins were skipped (GF257 warnings), after the registry's first read."""
    from . import REGISTRY
    REGISTRY._load()   # loads the plugins if nothing has read the registry yet
    return list(_PROBLEMS)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(package: str) -> str | None:
    """The installed version of distribution `package` (a plugin's, or any), or None."""
    from . import REGISTRY
    REGISTRY._load()
    for o in ORIGINS.values():
        if _normal(o.package) == _normal(package):
            return o.version
    try:
        return importlib.metadata.version(package)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def _entry_points() -> list:
    # looked up at call time, so a test can monkeypatch importlib.metadata.entry_points
    return sorted(importlib.metadata.entry_points(group=GROUP), key=lambda ep: ep.name)


def _dist(ep) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ep.value.split(":")[0].split(".")[0], "?"
    return dist.metadata["Name"] or dist.name, dist.version or "?"


def load_plugins(registry: dict) -> None:
    """Register the ops of every installed plugin into `registry` (the built-ins already in it), unless
    GRAPHFORMER_NO_PLUGINS is set (built-in ops only: a reproducible run whatever is installed)."""
    if os.environ.get("GRAPHFORMER_NO_PLUGINS"):
        return
    try:
        eps = _entry_points()
    except Exception as e:  # noqa: BLE001 — broken metadata of some package must not break graphformer
        _PROBLEMS.append(f"plugins not loaded: reading the `{GROUP}` entry points failed: {e}")
        return
    for ep in eps:
        package, version = _dist(ep)
        where = f"plugin `{ep.name}` ({package} {version})"
        try:
            plugin = ep.load()
            why = _invalid(plugin, registry)
        except (Exception, SystemExit) as e:  # noqa: BLE001 — foreign code's error: skip the plugin, say why
            why = f"it failed to import: {type(e).__name__}: {e}"
        if why:
            _PROBLEMS.append(f"{where} skipped: {why}")
            continue
        for op in plugin.ops:
            dict.__setitem__(registry, op.name, op)
            ORIGINS[op.name] = Origin(package, version, ep.name, plugin)


def _invalid(plugin: Any, registry: dict) -> str | None:
    """Why `plugin` can't be registered, or None."""
    if not isinstance(plugin, Plugin):
        return f"the entry point names a {type(plugin).__name__}, not a graphformer.ops.plugins.Plugin"
    if not isinstance(plugin.ops, (tuple, list)) or not plugin.ops:
        return "its `ops` is not a non-empty list of OpDefs"
    names = set()
    for op in plugin.ops:
        if not isinstance(op, OpDef):
            return f"{op!r} is not an OpDef"
        if not op.name.isidentifier() or op.name == "input":
            return f"op name `{op.name}` is not an identifier"
        builtin = dict.__contains__(registry, op.name) or op.name in getattr(registry, "homes", {})  # loaded or not
        if builtin or op.name in names:
            taken = origin(op.name) if builtin else "the plugin itself"
            return f"op `{op.name}` is already defined ({taken})"
        names.add(op.name)
        if not (isinstance(op.attrs, type) and issubclass(op.attrs, Attrs)):
            return f"op `{op.name}`: `attrs` is not a subclass of graphformer.ops.Attrs"
        if not isinstance(op.ports, tuple) or not all(isinstance(p, str) and p.strip("*?").isidentifier()
                                                      for p in op.ports):
            return f"op `{op.name}`: `ports` is not a tuple of port names"
        if not all(callable(f) for f in (op.shape, op.params, op.flops)):
            return f"op `{op.name}`: `shape`, `params` and `flops` must be functions"
    for backend in ("torch", "onnx"):
        module = getattr(plugin, backend)
        if module is not None and not (isinstance(module, str) and all(p.isidentifier() for p in module.split("."))):
            return f"its `{backend}` is not a module name"
    return None


class LoweringTable(LazyDict):
    """A backend's lowering table (op name → lowering). The first lookup imports the lowering modules of
    the installed plugins for this backend, once (their `@lowers` fill the table)."""

    def __init__(self, backend: str):
        super().__init__()
        self.backend = backend
        # while set: the lowering of every plugin op that has none (ONNX `--custom-ops`: a custom-domain node)
        self.fallback = None
        self._done = self._busy = False
        self._added: set[str] = set()
        _TABLES.append(self)

    def _load(self) -> None:
        if self._done or self._busy:
            return
        from . import REGISTRY
        self._busy = True
        try:
            before = set(dict.keys(self))
            for module in sorted({getattr(o.plugin, self.backend) for o in ORIGINS.values()} - {None}) \
                    if len(REGISTRY) else []:
                try:
                    importlib.import_module(module)
                except (Exception, SystemExit) as e:  # noqa: BLE001 — foreign code: its ops lack this lowering
                    _PROBLEMS.append(f"{self.backend} lowerings `{module}` skipped: it failed to import: "
                                     f"{type(e).__name__}: {e}")
                    sys.stderr.write(f"graphformer: warning[GF257]: {_PROBLEMS[-1]}\n")
            self._added = set(dict.keys(self)) - before
        finally:
            self._done, self._busy = True, False

    def _fallback(self, k) -> bool:
        return self.fallback is not None and k in ORIGINS and not dict.__contains__(self, k)

    def __contains__(self, k):
        self._load()
        return dict.__contains__(self, k) or self._fallback(k)

    def __getitem__(self, k):
        self._load()
        return self.fallback if self._fallback(k) else dict.__getitem__(self, k)

    def get(self, k, default=None):
        self._load()
        return self.fallback if self._fallback(k) else dict.get(self, k, default)


def reset() -> None:
    """Forget every plugin (their ops, lowerings and problems) so that the next read loads them again: for
    tests and `demonstration`, which change what is installed."""
    from . import REGISTRY
    modules = {getattr(o.plugin, b) for o in ORIGINS.values() for b in ("torch", "onnx")} - {None}
    for name in ORIGINS:
        dict.pop(REGISTRY, name, None)
    for table in _TABLES:
        for name in table._added:
            dict.pop(table, name, None)
        table._added, table._done = set(), False
    for module in modules:   # so that importing them again runs their `@lowers` again
        sys.modules.pop(module, None)
    ORIGINS.clear()
    _PROBLEMS.clear()
    REGISTRY._loaded = False


# ---------------------------------------------------------------- demonstrations (`graphformer explain`)

class SwishBetaAttrs(Attrs):
    beta: float = 1.0


def _swish_beta_flops(a, ins, out):
    return numel(out.shape) * 4


# A plugin op as small as they come, with neither traits nor lowerings: what GF254–GF256 refuse.
SWISH_BETA = PluginOpDef(
    "swish_beta", "core", "x · sigmoid(beta · x) (a demonstration plugin op)", SwishBetaAttrs, ("x",),
    lambda a, ins: same_shape(ins, ["x"]), flops=_swish_beta_flops)


@dataclass(frozen=True)
class _DemoDist:
    name: str
    version: str

    @property
    def metadata(self) -> dict:
        return {"Name": self.name}


@dataclass(frozen=True)
class DemoEntryPoint:
    """An entry point that is not installed: what tests and `graphformer explain` register on purpose."""

    name: str
    target: Any             # what `load` returns, or an exception it raises
    dist: Any = _DemoDist("graphformer-demo-plugin", "0.1")
    group: str = GROUP

    @property
    def value(self) -> str:
        return f"graphformer_demo:{self.name}"

    def load(self):
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


DEMOS = {
    "swish_beta": [DemoEntryPoint("swish_beta", Plugin((SWISH_BETA,)))],
    "broken": [DemoEntryPoint("broken", ModuleNotFoundError("No module named 'torch_extras'"))],
}


@contextmanager
def demonstration(entry_points: list | str) -> Iterator[None]:
    """Within the block, the installed plugins are `entry_points` (or the `DEMOS` entry of that name)."""
    eps = DEMOS[entry_points] if isinstance(entry_points, str) else entry_points
    real = importlib.metadata.entry_points
    reset()
    importlib.metadata.entry_points = lambda **kw: list(eps) if kw.get("group") == GROUP else real(**kw)
    try:
        yield
    finally:
        importlib.metadata.entry_points = real
        reset()

