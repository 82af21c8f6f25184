"""Weights without torch: read a state dict from a file, map a reference's names onto the spec's, check
the result against the spec's parameter shapes. Torch (`backends/torch/weights.py`) and ONNX
(`backends/onnx/weights.py`) are thin adapters over this module.

Everything here works on arrays of any kind that slice, reshape and transpose alike: numpy arrays (what
safetensors gives without torch) and torch tensors (a reference model's `state_dict()`, even on the meta
device). A converted tensor is of the same kind as the one it came from.

A map is data in the IR (`ir.WeightMap`, from the spec's `weight_maps:`; docs/weight-maps.md): rules
`from` (a reference key, `{i}` standing for a layer index) → `to` (a spec parameter, or several: the
fused reference tensor is split along dim 0 into that many parts: contiguous blocks, equal or as long
as the targets, interleaved per head or in alternate rows, as the rule's `split` says), optionally transposed first
(GPT-2's Conv1D stores `[in, out]`), reshaped to the parameter's shape and scaled last; `from: [a, b]`
builds one tensor from several (concatenated, or g · v / ‖v‖ with `weight_norm`, or a times a per-channel
vector with `multiply`: `_joined`, `_built`, their inverses `_unjoin`, `_unbuilt`); and `zero`
rules for parameters the reference lacks (a bias it has none of). Conversion is all-or-nothing: every
reference tensor must be used by a rule or ignored, every spec parameter must be set, every shape must
fit. Anything else is a `WeightMapError` whose message names the reference key and the spec parameter.
"""
from __future__ import annotations

import functools
import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from ..base.diagnostics import did_you_mean
from ..base.errors import WeightFileError, WeightMapError
from ..base.reading import FileProblem, open_regular
from ..ir import IRGraph, WeightMap, WeightRule

__all__ = ["WeightMapError", "WeightFileError", "read_state_dict", "get_map", "convert_state_dict",
           "to_reference", "check_shapes", "read_name", "stored_name", "unwritable_rules", "stored_shape_problems"]


# ---------------------------------------------------------------- reading

def read_state_dict(path: str) -> Mapping:
    """A state dict from .safetensors (numpy arrays, no torch needed) or from .pt / .bin (torch.load,
    `weights_only`, so a file can't run code), or from a save_pretrained directory (its files one after
    another, graphformer/weights/checkpoint.py, each confined to the directory). Only regular files are read
    (reading.open_regular). Safetensors files are mapped lazily (`checkpoint.MappedTensors`): only their
    bounded headers are read here, and each tensor is mapped from the file when it is taken and released
    when it is dropped, so a loader taking one tensor at a time never holds the checkpoint in memory.
    A .pt / .bin is memory-mapped by torch, so no tensor is larger than its file. Raises WeightFileError."""
    from .checkpoint import checkpoint_files, mapped_safetensors
    path = os.fspath(path)
    files = checkpoint_files(path) if os.path.isdir(path) else [path]
    if all(f.endswith(".safetensors") for f in files):
        return mapped_safetensors(files)
    return {k: v for f in files for k, v in _read_torch_file(f).items()}


def _read_torch_file(path: str) -> dict:
    try:
        fd, _ = open_regular(path)
    except FileProblem as e:
        raise WeightFileError(f"weights file: {e}") from None
    with os.fdopen(fd, "rb") as fh:
        return _read_torch(path, fh)


def _read_torch(path: str, fh) -> dict:
    """torch.load with `weights_only` (no code runs) and `mmap`: the tensors are views of the mapped file,
    so no storage can be larger than the file (the old pre-zip format, which allocates storages of the
    sizes its pickle claims, is refused by torch under mmap)."""
    try:
        import torch
    except ImportError:
        raise WeightFileError(f"`{path}` is not a .safetensors file; reading .pt/.bin weights needs torch") from None
    source = _same_file(path, fh)
    try:
        sd = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a corrupt or foreign file: the user's to fix, not a traceback
        raise WeightFileError(f"cannot read weights file `{path}`: {_named(e, source, path)}") from None
    if not isinstance(sd, Mapping):
        raise WeightFileError(f"`{path}` does not hold a state dict")
    return dict(sd)


def _same_file(path: str, fh) -> str:
    """A name that opens the very file behind `fh` (checked by open_regular), where the system has one."""
    same = f"/proc/self/fd/{fh.fileno()}"
    return same if os.path.exists(same) else path


def _named(exc: Exception, source: str, path: str) -> str:
    return str(exc).replace(source, path)


# ---------------------------------------------------------------- stored names → the names rules read

# One reader of a key for everything that reads or writes through a map (loading, ONNX weights, writing back):
# `strip_prefix`, then the map's `renames` in order. A checkpoint often stores a tensor under another name than
# the module that made it holds it (transformers writes LLaVA's `model.language_model.layers.0` as
# `language_model.model.layers.0`); both must read as one name, and a file holding both is refused.

def _segments(text: str) -> re.Pattern:
    """`text` as whole dotted segments anywhere in a key (`{i}`: a run of digits, the same where it recurs)."""
    return re.compile(r"(?:^|(?<=\.))" + _pattern(text).pattern + r"(?=\.|$)")


@functools.lru_cache(maxsize=256)
def _renamers(renames: tuple) -> tuple:
    return tuple((_segments(stored), read, _segments(read), stored) for stored, read in renames)


def _substitute(pattern: re.Pattern, into: str, text: str) -> str:
    return pattern.sub(lambda m: _fill(into, {k: v for k, v in m.groupdict().items() if v is not None}), text)


def read_name(wmap: WeightMap, key: str) -> str:
    """The name the map's rules and `ignore` patterns read for a stored reference key."""
    name = _strip(wmap, key)
    for stored, read, _, _ in _renamers(wmap.renames):
        name = _substitute(stored, read, name)
    return name


def stored_name(wmap: WeightMap, name: str) -> str:
    """The key a map writes for a name its rules make: the renames undone, last first (without `strip_prefix`,
    as the hub's files and transformers' `save_pretrained` store it). A run an undone rename wrote is a stored
    name already, which an earlier rename doesn't undo again: LLaVA's `lm_head` is stored as
    `language_model.lm_head`, not as `language_model.model.lm_head` (which reads back the same, and which
    transformers doesn't load)."""
    written: list[tuple[int, int]] = []           # the runs undone renames wrote, in `name`
    for _, _, read, stored in reversed(_renamers(wmap.renames)):
        out, runs, end = [], [], 0
        for m in read.finditer(name):
            if any(a < m.end() and m.start() < b for a, b in written):
                continue
            out.append(name[end:m.start()])
            start = sum(map(len, out))
            out.append(_fill(stored, {k: v for k, v in m.groupdict().items() if v is not None}))
            runs.append((m.start(), m.end(), start, start + len(out[-1])))
            end = m.end()
        if not runs:
            continue
        out.append(name[end:])
        written = [(_moved(a, runs), _moved(b, runs)) for a, b in written] + [(s, e) for _, _, s, e in runs]
        name = "".join(out)
    return name


def _moved(pos: int, runs: list[tuple[int, int, int, int]]) -> int:
    """Where position `pos` of a name lies after the runs (old start, old end, new start, new end) were replaced
    (`pos` is never inside one: written runs and replaced ones don't overlap)."""
    shift = 0
    for old_start, old_end, new_start, new_end in runs:
        if old_end <= pos:
            shift = new_end - old_end
    return pos + shift


def _read_names(wmap: WeightMap, keys, mapping: str) -> tuple[dict, dict, list[str]]:
    """({key: name read}, {name read: key}, problems): two keys read as one name are one tensor stored twice
    under two names, refused rather than one picked."""
    names, by_name, problems = {}, {}, []
    for key in keys:
        name = names[key] = read_name(wmap, key)
        if name in by_name:
            problems.append(f"reference tensors `{by_name[name]}` and `{key}` are one tensor under two names (map "
                            f"`{mapping}` reads both as `{name}`): the checkpoint holds both; keep one of them")
        else:
            by_name[name] = key
    return names, by_name, problems


def rename_problems(renames: tuple, sources: list[str]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """What is wrong with a map's renames (GF291: (rename index, why)) and which rule sources no stored key
    can reach because a rename takes their name away (GF292: (source index, why)). Index placeholders in a
    rule's `from` (`{i}`, `{i+K}`) count as an index."""
    bad, seen = [], {}
    for k, (stored, read) in enumerate(renames):
        why = ("an empty name renames nothing" if not stored.strip(".") or not read.strip(".") else
               "`from` and `to` are the same name" if stored == read else
               "a name is whole dotted segments: no leading, trailing or doubled dot"
               if any(not part for t in (stored, read) for part in t.split(".")) else
               "the only placeholder is `{i}`, on both sides or neither"
               if any(re.sub(r"\{i\}", "", t).count("{") or "}" in re.sub(r"\{i\}", "", t) or "*" in t
                      for t in (stored, read)) or ("{i}" in stored) != ("{i}" in read) else
               f"`{stored}` is renamed twice (also by rename {seen[stored] + 1})" if stored in seen else None)
        seen.setdefault(stored, k)
        if why:
            bad.append((k, why))
    if bad:
        return bad, []
    unreachable = []
    for j, src in enumerate(sources):
        text = re.sub(r"\{i[^{}]*\}", "0", src).replace("{e}", "0")
        for stored, read in renames:
            if _segments(stored).search(text) and not _segments(stored).search(re.sub(r"\{i\}", "0", read)):
                unreachable.append((j, f"`{src}` contains `{stored}`, which the map's renames read as `{read}`: "
                                       "no stored key reaches this rule"))
                break
    return [], unreachable


# ---------------------------------------------------------------- arrays of either kind

def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "reshape")


def _contiguous(x):
    if hasattr(x, "contiguous"):      # torch
        return x.contiguous()
    import numpy as np
    return np.ascontiguousarray(x)


def _same_values(a, b) -> bool:
    if any(getattr(getattr(x, "device", None), "type", None) == "meta" for x in (a, b)):
        return True                   # shapes only: nothing to compare
    if hasattr(a, "contiguous") or hasattr(b, "contiguous"):   # torch on either side (a loaded parameter)
        import torch
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return torch.equal(a, b.to(a))
    import numpy as np
    return np.array_equal(np.asarray(a), np.asarray(b))


def _is_float(x) -> bool:
    """A floating-point array or tensor (bfloat16 included, however numpy spells it)."""
    if hasattr(x, "is_floating_point"):
        return x.is_floating_point()
    return x.dtype.kind == "f" or x.dtype.name == "bfloat16"


def _count(dims) -> int:
    return math.prod(int(d) for d in dims)


def _shape(dims) -> str:
    return "[" + ", ".join(str(int(s)) for s in dims) + "]"


# ---------------------------------------------------------------- mapping

class _Glob:
    """An `ignore` pattern: `*` is any run of characters, `{i}` a layer index (the same one each time).

    Matched without a regex: `.*` groups backtrack exponentially (14 wildcards against a 3,000-character
    key never finished). A `*`-only pattern is matched greedily segment by segment, which is linear; with
    `{i}`, each index the key could hold (a run of digits in it, up to 6 long) is tried as a literal."""

    MAX_INDEX_DIGITS = 6

    def __init__(self, text: str):
        self.text = text

    def fullmatch(self, key: str) -> bool:
        if "{i}" not in self.text:
            return _glob_match(self.text.split("*"), key)
        candidates = {key[a:b] for a in range(len(key)) if key[a].isdigit()
                      for b in range(a + 1, min(len(key), a + self.MAX_INDEX_DIGITS) + 1) if key[a:b].isdigit()}
        return any(_glob_match(self.text.replace("{i}", c).split("*"), key) for c in candidates)


def _glob_match(segments: list[str], key: str) -> bool:
    """`key` matches literal `segments` joined by `*`: first is a prefix, last a suffix, the rest in order
    between them (taking each at its earliest place is always right for `*`)."""
    if len(segments) == 1:
        return key == segments[0]
    first, *middle, last = segments
    if len(key) < len(first) + len(last) or not key.startswith(first) or not key.endswith(last):
        return False
    pos, end = len(first), len(key) - len(last)
    for seg in middle:
        found = key.find(seg, pos, end)
        if found < 0:
            return False
        pos = found + len(seg)
    return True


def _pattern(text: str) -> re.Pattern:
    """`{i}` → a layer index and `{e}` → an expert index (digits, the same each time a placeholder recurs);
    everything else literal."""
    out, seen = [], set()
    for piece in re.split(r"(\{[ie]\})", text):
        name = piece[1:-1] if piece in ("{i}", "{e}") else None
        if name is None:
            out.append(re.escape(piece))
        else:
            out.append(f"(?P={name})" if name in seen else f"(?P<{name}>\\d+)")
            seen.add(name)
    return re.compile("".join(out))


# A layer index in `from`, written as the reference's index in terms of the spec's `i`: `{i}`; `{i+K}`,
# `{i-K}`, `{i*K}`, `{i//K}` (arithmetic, one operator); `{i<K}` an index below K, substituted as it is (the
# first of two `repeat`s). The expander has replaced a param name K by its value. Bounded: K ≤ MAX_K.
_INDEX = re.compile(r"\{i(?:(\+|-|\*|//|<)(\d+))?\}")
MAX_K = 1_000_000


@dataclass
class _Index:
    """The arithmetic of one `{i op K}`: the reference index of spec index i, and back."""
    op: str | None = None
    k: int = 0

    def ref(self, i: int) -> int:
        return {None: i, "<": i, "+": i + self.k, "-": i - self.k, "*": i * self.k,
                "//": i // self.k if self.k else i}[self.op]

    def spec(self, r: int) -> list[int]:
        """The spec indices whose reference index is `r` (several for `//`, none out of range)."""
        if self.op == "<":
            return [r] if r < self.k else []
        if self.op == "*":
            return [r // self.k] if self.k and r % self.k == 0 else []
        if self.op == "//":
            return list(range(r * self.k, (r + 1) * self.k)) if self.k else [r]
        i = {None: r, "+": r - self.k, "-": r + self.k}[self.op]
        return [i] if i >= 0 else []


@dataclass
class _Rule:
    rule: WeightRule
    regex: re.Pattern | None
    index: _Index = None
    others: tuple = ()               # `from: [a, b]`: the patterns of the sources after the first

    @classmethod
    def of(cls, rule: WeightRule) -> "_Rule":
        if rule.src is None:
            return cls(rule, None, _Index())
        m = _INDEX.search(rule.src)
        index = _Index(m.group(1), min(int(m.group(2)), MAX_K)) if m and m.group(1) else _Index()
        return cls(rule, _pattern(_INDEX.sub("{i}", rule.src)), index,
                   tuple(_pattern(_INDEX.sub("{i}", o)) for o in rule.more))

    def matches(self, name: str) -> list[dict]:
        """The placeholders (`i`: the spec's layer index, `e`: an expert) for each spec layer that reference
        key `name` stands for; [] when it isn't this rule's."""
        m = self.regex.fullmatch(name)
        if not m:
            return []
        found = {k: v for k, v in m.groupdict().items() if v is not None}
        if "i" not in found:
            return [found]
        return [{**found, "i": str(j)} for j in self.index.spec(int(found["i"]))]

    def keys(self, at: dict) -> list[str]:
        """Every source's reference key for placeholders `at` (one unless `from` is a list)."""
        return [self.key(at, src) for src in (self.rule.src, *self.rule.more)]

    def key(self, at: dict, src: str | None = None) -> str:
        """The reference key for placeholders `at` (the inverse of `matches`)."""
        src = src or self.rule.src
        if "i" in at:
            src = _INDEX.sub(str(self.index.ref(int(at["i"]))), src)
        return src.replace("{e}", at["e"]) if "e" in at else src

    def parts(self, key: str, tensor, at: dict, rows: Mapping | None = None) -> list[tuple[str, object, str]]:
        """(spec name, tensor, how it was made) for each target; raises WeightMapError on bad geometry.
        `rows`: spec parameter → its dim 0, for `split: blocks` into parts of unequal sizes."""
        how = []
        if self.rule.transpose:
            # with `unstack`, each expert's matrix is transposed: [E, a, b] → [E, b, a] (GPT-OSS's experts)
            rank = 3 if self.rule.unstack else 2
            if len(tensor.shape) != rank:
                raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} can't be transposed: "
                                     f"`transpose` needs a {rank}-D tensor" + (" with `unstack`" if rank == 3 else ""))
            tensor = _transposed(tensor, self.rule)
            how.append("transposed")
        names = [_fill(t, at) for t in self.rule.targets]
        if self.rule.unstack:  # [E, ...]: one slice per expert, each then placed (and split) as usual
            if len(tensor.shape) < 2:
                raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} can't be unstacked: "
                                     f"`unstack` needs a tensor with an expert axis first")
            parts = [part for e in range(tensor.shape[0])
                     for part in _split(key, tensor[e], [n.replace("{e}", str(e)) for n in names],
                                        how + [f"expert {e}"], self.rule, rows)]
        else:
            parts = _split(key, tensor, names, how, self.rule, rows)
        if self.rule.scale is None:
            return parts
        s = self.rule.scale
        return [(name, _scaled(key, value, s), ", ".join(filter(None, [h, f"scaled by {s:g}"])))
                for name, value, h in parts]

    def zero_targets(self, shapes: Mapping) -> list[str]:
        """The spec parameters a `zero` rule names: its targets, `{i}` standing for any layer index."""
        patterns = [_pattern(t) for t in self.rule.targets]
        return [p for p in shapes if any(r.fullmatch(p) for r in patterns)]


def _fill(text: str, at: dict) -> str:
    """`text` with its `{i}` / `{e}` placeholders replaced by the indices in `at` (others left)."""
    for k, v in at.items():
        text = text.replace("{" + k + "}", v)
    return text


def _scaled(key: str, value, s: float):
    """`value * s`, refused where scaling made a finite tensor non-finite (overflow in its dtype:
    half precision ends at 65504)."""
    with warnings.catch_warnings():  # numpy's overflow warning: refused below, with the names
        warnings.simplefilter("ignore", RuntimeWarning)
        out = value * s
    if _is_float(value) and not _all_finite(out) and _all_finite(value):
        raise WeightMapError(f"reference tensor `{key}` scaled by {s:g} overflows {_dtype_name(value)}: the result "
                             "is not finite")
    return out


def _all_finite(x) -> bool:
    if getattr(getattr(x, "device", None), "type", None) == "meta":
        return True                   # shapes only: nothing to check
    if hasattr(x, "isfinite"):        # torch
        return bool(x.isfinite().all())
    import numpy as np
    return bool(np.isfinite(np.asarray(x, dtype=np.float32) if x.dtype.name == "bfloat16" else x).all())


def _dtype_name(x) -> str:
    return str(x.dtype).removeprefix("torch.")


def _transposed(tensor, rule: WeightRule):
    """`transpose`: the matrix's two axes swapped (each expert's, under `unstack`). Its own inverse."""
    return tensor.swapaxes(1, 2) if rule.unstack else tensor.T


def _split(key: str, tensor, names: list[str], how: list[str], rule: WeightRule,
           rows: Mapping | None = None) -> list[tuple[str, object, str]]:
    """The tensor as one target, or split along dim 0 into the targets (a fused q, k, v) by the rule's
    layout: `blocks`, one contiguous block per target, as long as the target (`rows`: the spec parameters'
    dim 0, where they add up to the tensor's: Phi-3's q, k, v of grouped-query attention), else equal;
    `heads`, [heads, targets, part]: per head, one slice per target (GPT-NeoX's and BLOOM's
    query_key_value); `alternate`, row r to target r mod n (GPT-OSS's interleaved gate/up): the `heads`
    layout with one row per part and group."""
    if len(names) == 1:
        return [(names[0], _contiguous(tensor), ", ".join(how))]
    n = len(names)
    sizes = [rows.get(t) for t in names] if rows is not None and rule.split == "blocks" else None
    if sizes and None not in sizes and len(tensor.shape) and sum(sizes) == tensor.shape[0] and len(set(sizes)) > 1:
        starts = [sum(sizes[:k]) for k in range(n)]
        return [(name, _contiguous(tensor[a:a + size]), ", ".join(how + [f"split as blocks, rows {a}:{a + size}"]))
                for name, a, size in zip(names, starts, sizes)]
    groups = _groups(rule, tensor.shape[0] // n if len(tensor.shape) else 1)
    if len(tensor.shape) == 0 or tensor.shape[0] % (n * groups):
        into = f"{groups} heads × {n} parts" if rule.split == "heads" else f"{n} parts"
        raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} does not split evenly into {into} "
                             f"along dim 0 for {', '.join(f'`{x}`' for x in names)}")
    size = tensor.shape[0] // (n * groups)
    rest = tuple(tensor.shape[1:])
    grid = tensor.reshape((groups, n, size) + rest)           # blocks: groups = 1, the parts one after another
    layout = {"heads": f"split by {groups} heads, ", "alternate": "split as alternate rows, "}.get(
        rule.split, "split as blocks, ")
    return [(name, _contiguous(grid[:, k].reshape((groups * size,) + rest)),
             ", ".join(how + [f"{layout}part {k + 1} of {n}"])) for k, name in enumerate(names)]


def _groups(rule: WeightRule, rows_per_part: int) -> int:
    """How many groups a fused tensor's parts interleave in: `heads`, per head; `alternate`, per row."""
    return {"heads": rule.heads, "alternate": max(rows_per_part, 1)}.get(rule.split, 1)


def _fuse(parts: list, rule: WeightRule):
    """The inverse of `_split`: the targets' tensors back into the reference's fused layout."""
    if len(parts) == 1 or rule.split not in ("heads", "alternate"):
        return _concat(parts)
    groups = _groups(rule, parts[0].shape[0])
    rest = tuple(parts[0].shape[1:])
    grid = _stack([p.reshape((groups, p.shape[0] // groups) + rest) for p in parts], axis=1)
    return grid.reshape((-1,) + rest)


def _ir(spec) -> IRGraph:
    return getattr(spec, "ir", spec)


def get_map(spec, mapping: str) -> WeightMap:
    ir = _ir(spec)
    maps = ir.weight_maps
    if mapping in maps:
        return maps[mapping]
    if not maps:
        raise WeightMapError(f"spec `{ir.name}` declares no weight maps (add a `weight_maps:` section)")
    hint = did_you_mean(mapping, maps)
    known = ", ".join(f"`{m}`" for m in maps)
    raise WeightMapError(f"spec `{ir.name}` has no weight map `{mapping}`"
                         + (f" (did you mean `{hint}`?)" if hint else "") + f"; known maps: {known}")


def convert_state_dict(spec, state_dict: Mapping, mapping: str, place=None) -> dict:
    """Map a reference state dict onto the spec's parameter names (`ir.param_shapes()` keys) through
    `mapping` (a Spec or an IRGraph either way).

    Returns a new dict `{spec parameter: array}` with exactly the spec's parameters, contiguous, of the
    reference's kind and dtype. Raises WeightMapError listing every problem found.

    `place(name, array)`, if given, takes each converted tensor as soon as it is made, and what it returns
    is kept instead: the torch adapter copies it into the module's parameter and keeps the parameter, so
    the reference's tensors stream through one rule at a time (`state_dict` read key by key).
    """
    ir = _ir(spec)
    wmap = get_map(ir, mapping)
    shapes = ir.param_shapes()
    # a tied layer's weight is its owner's: `lm_head.weight` names `tok.weight` when the head is tied
    tied = ir.param_aliases()   # a tied or shared (`share`) parameter is its owner's
    rows = {p: s[0] for p, s in shapes.items() if s}   # `split: blocks` into unequal parts reads these
    # placeholders were validated with the spec: `{i}` (in `to` only if in `from`), `{e}` with `unstack`
    rules = [_Rule.of(r) for r in wmap.rules if not r.zero]
    zeros = [_Rule(r, None) for r in wmap.rules if r.zero]
    ignores = [_Glob(p) for p in wmap.ignore]
    out: dict = {}
    source: dict[str, str] = {}            # spec parameter → the reference key that set it
    rejected: set[str] = set()
    names, by_name, problems = _read_names(wmap, state_dict, mapping)
    joined: set[str] = set()               # keys concatenated onto an earlier source (`from: [a, b]`)
    for key, tensor in state_dict.items():   # items(): the torch loader reports progress through it
        name = names[key]
        if by_name[name] != key:
            continue                       # a second name of one tensor: refused above
        hits = [(r, at) for r in rules for at in r.matches(name)]
        if not hits and any(o.fullmatch(name) for r in rules for o in r.others):
            continue                       # read with its rule's first source (checked below)
        if not hits:
            if not any(p.fullmatch(name) for p in ignores):
                problems.append(f"reference tensor `{key}` is not used by map `{mapping}` — add a rule or an "
                                f"`ignore` pattern")
            continue
        if not _is_array(tensor):
            problems.append(f"reference entry `{key}` is a {type(tensor).__name__}, not a tensor")
            continue
        for rule, at in hits:
            try:
                whole = _joined(rule, at, tensor, state_dict, by_name, joined) if rule.rule.more else tensor
                parts = rule.parts(key, whole, at, rows)
            except WeightMapError as e:
                problems.extend(e.problems)
                continue
            for target, value, how in parts:
                target = tied.get(target, target)
                named = f"rule `{rule.rule.src}`" if rule.rule.src != name else ""   # a pattern: which one
                how = ", ".join(filter(None, [named, how]))
                problem = _place(out, source, shapes, target, value, key, how, mapping, rule.rule.reshape,
                                 ir.switched_off, place)
                if problem:
                    problems.append(problem)
                    rejected.add(target)
    problems += [f"reference tensor `{k}` is not used by map `{mapping}`: its rule's first tensor is missing"
                 for k in state_dict if k not in joined and not any(r.matches(names[k]) for r in rules)
                 and any(o.fullmatch(names[k]) for r in rules for o in r.others)]
    problems += _place_zeros(out, source, shapes, zeros, state_dict, mapping, place)
    # a parameter whose tensor was rejected is already reported: don't also call it "not set"
    problems += [f"spec parameter `{p}` {_shape(s)} is not set by map `{mapping}`: {_why_unset(p, rules, wmap)}"
                 for p, s in shapes.items() if p not in out and p not in rejected]
    if problems:
        raise WeightMapError(problems)
    return {p: out[p] for p in shapes}


def _joined(rule: _Rule, at: dict, first, state_dict: Mapping, by_name: dict, joined: set):
    """`from: [a, b, ...]`: the sources' tensors concatenated along `concat` (a WeightMapError naming a
    missing one or a mismatch)."""
    names = rule.keys(at)[1:]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise WeightMapError(f"rule `{rule.rule.src}` concatenates {_few(missing)}, which the reference lacks")
    tensors = [first] + [state_dict[by_name[n]] for n in names]
    axis = rule.rule.concat
    if rule.rule.combine != "concat":
        joined.update(by_name[n] for n in names)
        return _built(rule.rule, tensors, axis)
    if any(len(t.shape) <= axis or t.shape[:axis] + t.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]
           for t in tensors):
        shapes = ", ".join(_shape(t.shape) for t in tensors)
        raise WeightMapError(f"rule `{rule.rule.src}`: tensors {shapes} can't be concatenated along axis {axis}")
    joined.update(by_name[n] for n in names)
    return _concat(tensors, axis)


# ---------------------------------------------------------------- building one tensor from two

def _built(rule: WeightRule, tensors: list, axis: int):
    """`weight_norm`: g · v / ‖v‖ from [g, v]; `multiply`: w times the vector s along `axis` from [w, s]. Either
    way the second factor has one entry per slice of `axis` (any shape of that many elements: torch keeps g as
    [1, 1, k]); anything else is a WeightMapError naming the rule and both shapes."""
    first, second = tensors if rule.combine == "multiply" else tensors[::-1]   # the full-size tensor first
    if len(first.shape) <= axis or _count(second.shape) != first.shape[axis]:
        names = "[g, v]" if rule.combine == "weight_norm" else "[w, s]"
        raise WeightMapError(f"rule `{rule.src}` ({rule.combine} along axis {axis}): tensors {names} of shapes "
                             f"{', '.join(_shape(t.shape) for t in tensors)} don't fit: the second factor needs one "
                             f"entry per slice of axis {axis} of the full tensor")
    factor = second.reshape(_along(first, axis))
    if rule.combine == "multiply":
        return first * factor
    # v · (g / ‖v‖), the norm as `_unbuilt` computes it: g written back as ‖w‖ then gives a factor of exactly 1
    # (torch's fused weight_norm kernel sums in another order: its result may differ from this in the last bit)
    return first * (factor / _norm_except(first, axis))


def _along(x, axis: int) -> tuple:
    """The shape of a vector along `axis` of `x`, broadcastable against it: [1, .., n, .., 1]."""
    return tuple(n if k == axis else 1 for k, n in enumerate(x.shape))


def _norm_except(x, axis: int):
    """‖x‖ over every axis but `axis`, kept as size-1 axes (torch's norm_except_dim)."""
    if hasattr(x, "contiguous"):
        import torch
        return torch.norm_except_dim(x, 2, axis)
    import numpy as np
    others = tuple(k for k in range(x.ndim) if k != axis)
    return np.sqrt(np.sum(x * x, axis=others, keepdims=True)).astype(x.dtype)


def _unbuilt(rule: WeightRule, value, shapes: list) -> list:
    """The inverse of `_built`, up to the factors' freedom: `weight_norm` gives g = ‖w‖ and v = w (a zero slice:
    v = 1, g = 0), `multiply` gives w·s and s = 1. Loading the result gives `value` back bit for bit (the
    factor is exactly 1); the reference's own factors are not recovered (v's length and s are not
    stored in the product). `shapes`: the sources' shapes, where the reference names them."""
    axis = rule.concat
    if rule.combine == "multiply":
        ones = _ones_like(value, shapes[1] or (value.shape[axis],))
        return [value, ones]
    g = _norm_except(value, axis)
    return [g.reshape(shapes[0]) if shapes[0] else g, _ones_where_zero(g, value)]


def _ones_where_zero(g, v):
    """`v` with its all-zero slices (where g is 0) set to 1: a direction of length 0 has no direction, and
    g = 0 times any direction is the zero slice again."""
    if getattr(getattr(v, "device", None), "type", None) == "meta":
        return v
    if hasattr(v, "contiguous"):
        import torch
        return torch.where(g == 0, torch.ones((), dtype=v.dtype), v) if bool((g == 0).any()) else v
    import numpy as np
    return np.where(g == 0, np.ones((), dtype=v.dtype), v) if (g == 0).any() else v


def _ones_like(like, shape):
    if hasattr(like, "new_ones"):
        return like.new_ones(tuple(shape))
    import numpy as np
    return np.ones(tuple(shape), dtype=like.dtype)


def _place_zeros(out, source, shapes, zeros: list[_Rule], state_dict: Mapping, mapping: str,
                 place=None) -> list[str]:
    """Set the parameters of `zero` rules to zeros of the reference's kind and dtype. A reference tensor
    that also set one must be zero itself: the map says the reference has no such tensor."""
    problems = []
    like = next((v for v in state_dict.values() if _is_array(v) and _is_float(v)), None)
    for rule in zeros:
        for target in rule.zero_targets(shapes):
            if target not in out:
                zero = _zeros(like, shapes[target])
                out[target], source[target] = place(target, zero) if place else zero, "(zero)"
            elif not _same_values(out[target], _zeros(out[target], shapes[target])):
                problems.append(f"reference tensor `{source[target]}` sets spec parameter `{target}`, which map "
                                f"`{mapping}` declares absent (`zero: true`), to values that are not all zero")
    return problems


def _zeros(like, shape):
    """Zeros of `shape` of the same kind, dtype and device as `like` (float32 numpy when there is none)."""
    if hasattr(like, "new_zeros"):      # torch
        return like.new_zeros(tuple(shape))
    import numpy as np
    return np.zeros(tuple(shape), dtype=like.dtype if like is not None else np.float32)


def _why_unset(param: str, rules: list[_Rule], wmap: WeightMap) -> str:
    """Name the reference tensor the map expected for `param`, so both sides of the gap are visible."""
    for r in rules:
        for t in r.rule.targets:
            if m := _pattern(t).fullmatch(param):
                key = r.key({k: v for k, v in m.groupdict().items() if v is not None})
                stored = stored_name(wmap, key)
                others = list(dict.fromkeys(k for k in (stored, *(p + key for p in wmap.strip_prefix))
                                            if k and k != key))
                return f"the reference has no tensor `{key}`" + (f" (or {_few(others)})" if others else "")
    return "no rule's `to` names it"


def _place(out, source, shapes, target, value, key, how, mapping, reshape=False,
           switched_off=None, place=None) -> str | None:
    """Put one converted tensor at `target` (reshaped to its shape if the rule says so), or return the problem."""
    if not _is_float(value):  # never a silent cast: ids or complex numbers aren't weights
        return (f"reference tensor `{key}` has dtype {str(value.dtype).removeprefix('torch.')}; spec parameter "
                f"`{target}` needs a floating-point tensor (convert it explicitly if that is really meant)")
    off = next((why for node, why in (switched_off or {}).items() if target.startswith(node + ".")), None)
    if target not in shapes and off:
        return (f"map `{mapping}` sends reference tensor `{key}` to `{target}`, whose node is left out of this "
                f"build ({off}): the reference has a part the spec was configured without")
    if target not in shapes:
        hint = did_you_mean(target, shapes, max_distance=3)
        if hint and re.sub(r"\d+", "#", hint) == re.sub(r"\d+", "#", target):
            note = " (only a layer index differs: does the spec have as many layers as the reference?)"
        else:
            note = f" (did you mean `{hint}`?)" if hint else ""
        return (f"map `{mapping}` sends reference tensor `{key}` to `{target}`, which is not a parameter of "
                f"the spec{note}")
    want = tuple(shapes[target])
    same_count = _count(value.shape) == _count(want)
    if tuple(value.shape) != want and (reshape and same_count
                                       or [d for d in value.shape if d != 1] == [d for d in want if d != 1]):
        # asked for (`reshape: true`), or only unit axes differ (ViT's cls_token [1, 1, D] → [1, D])
        value = value.reshape(want)
    if tuple(value.shape) != want:
        if reshape:
            how = ", ".join(filter(None, [how, f"reshape: {_count(value.shape)} elements for {_count(want)}"]))
        note = f" ({how})" if how else ""
        return (f"shape mismatch: spec parameter `{target}` is {_shape(want)} but reference tensor `{key}` gives "
                f"{_shape(value.shape)}{note}")
    if target in out:
        # two reference keys for one parameter: only a tie (e.g. GPT-2's lm_head = wte) may do that
        if not _same_values(out[target], value):
            return (f"reference tensors `{source[target]}` and `{key}` both set spec parameter `{target}` but "
                    f"differ (the spec ties them to one parameter)")
        return None
    out[target], source[target] = place(target, value) if place else value, key
    return None


# ---------------------------------------------------------------- the other way: spec → reference

def to_reference(spec, weights: Mapping, mapping: str, reference: Mapping | None = None) -> dict:
    """The spec's parameters under the reference's names: the inverse of `convert_state_dict`, so
    `convert_state_dict(spec, to_reference(spec, w, m), m)` gives `w` back.

    `reference`: the reference's own state dict (tensors or anything with a `.shape`, e.g.
    `ref.state_dict()`) to name exactly its keys, with the map's `strip_prefix` where it has it and in its
    shapes; keys the map ignores (buffers) are left out. Without it: one key per rule and layer, without
    the prefix, as the map's `renames` store it (the hub's names: `read_name` gives the rules' back). Fused targets are concatenated along dim 0, transposed ones transposed back, unstacked
    experts stacked. Raises WeightMapError naming each key no rule can make and each parameter unwritten.
    """
    ir = _ir(spec)
    wmap = get_map(ir, mapping)
    if reference is None and (unwritable := unwritable_rules(wmap)):
        raise WeightMapError([f"map `{mapping}`: rule `{r.src}` can't be written back without a reference (GF301): "
                              f"{why}" for r, why in unwritable])
    tied = ir.param_aliases()   # a tied or shared (`share`) parameter is its owner's
    rules = [_Rule.of(r) for r in wmap.rules if not r.zero]
    # parameters a `zero` rule declares absent from the reference: nothing to write back
    absent = {p for r in wmap.rules if r.zero for p in _Rule(r, None).zero_targets(weights)}
    if reference is None:   # the names the rules make, written as the map's renames store them
        names = {stored_name(wmap, k): k for k in _keys(rules, weights, tied)}
        by_name, problems = {}, [f"map `{mapping}` can't write `{name}` back: its renames read `{key}` as "
                                 f"`{read_name(wmap, key)}`" for key, name in names.items() if read_name(wmap, key) != name]
    else:
        names, by_name, problems = _read_names(wmap, reference, mapping)
    ignores = [_Glob(g) for g in wmap.ignore] if reference is not None else []   # a rule wins over an ignore
    keys = [k for k in names if not any(p.fullmatch(names[k]) for p in ignores)]
    out, used = {}, set()
    for key in keys:
        name = names[key]
        hit = next(((r, ats) for r in rules if (ats := r.matches(name))), None)
        if hit is None and any(o.fullmatch(name) for r in rules for o in r.others):
            continue                       # written with its rule's first source
        if hit is None:
            problems.append(f"reference tensor `{key}` is made by no rule of map `{mapping}`")
            continue
        rule, at, made = hit[0].rule, hit[1][0], hit[0]
        targets = [tied.get(t, t) for t in _targets(rule, at, weights, tied)]
        for other in hit[1][1:]:   # `{i//K}`: K spec layers read this one tensor, so they must be equal
            same = [tied.get(t, t) for t in _targets(rule, other, weights, tied)]
            differ = [(a, b) for a, b in zip(targets, same) if not _same_values(weights[a], weights[b])]
            problems += [f"spec parameters `{a}` and `{b}` both come from reference tensor `{key}` but differ"
                         for a, b in differ]
            used.update(same)
        if not targets:
            wanted = [_fill(t, at) for t in rule.targets]
            problems.append(f"reference tensor `{key}` needs spec parameter(s) {_few(wanted)}, which the weights lack")
            continue
        value = _stack([_fuse([weights[t] for t in group], rule) for group in _by_expert(rule, targets)]) \
            if rule.unstack else _fuse([weights[t] for t in targets], rule)
        if rule.transpose:
            value = _transposed(value, rule)
        if rule.scale is not None:
            value = value / rule.scale
        written = [by_name.get(k) or stored_name(wmap, k) for k in made.keys(at)]
        written[0] = key
        for k, piece in zip(written, _unjoin(rule, value, written, reference)):
            want = tuple(reference[k].shape) if reference is not None else rule.stored_shape
            if want is not None and tuple(piece.shape) != want:
                # unit axes, or `reshape: true` (same element count): convert_state_dict checks
                if _count(piece.shape) != _count(want):
                    problems.append(f"rule `{rule.src}` stores `{k}` as {_shape(want)}, which does not hold the "
                                    f"{_count(piece.shape)} elements of {_shape(piece.shape)}")
                    continue
                piece = piece.reshape(want)
            out[k] = _contiguous(piece)
        used.update(targets)
    problems += [f"spec parameter `{p}` is written by no rule of map `{mapping}`" for p in weights
                 if p not in used and p not in absent]
    if problems:
        raise WeightMapError(problems)
    return {k: out[k] for k in keys if k in out} if reference is not None else out


def unwritable_rules(wmap: WeightMap) -> list[tuple[WeightRule, str]]:
    """The rules whose stored tensor a writer without a reference can't make exactly: (rule, why). Every other
    step inverts from the rule alone (a transpose is its own inverse, a split is fused back by its layout, a
    scale divided out, unit axes given back by `stored_shape`); `reshape: true` says the stored shape differs
    in more than unit axes without saying which it is."""
    return [(r, "`reshape: true` fits the tensor to the parameter's shape, and nothing says which shape the "
                "reference stores it in: add `stored_shape: [...]`")
            for r in wmap.rules if r.reshape and r.stored_shape is None and not r.zero]


def stored_shape_problems(spec) -> list[tuple[str, WeightRule, str]]:
    """(map, rule, why) for each `stored_shape` that doesn't hold the elements of the parameters its rule
    makes (all of them, fused or stacked), at every layer and expert. [] when no rule has one (nothing unrolled)."""
    ir = _ir(spec)
    marked = [(name, r) for name, m in ir.weight_maps.items() for r in m.rules if r.stored_shape is not None]
    if not marked:
        return []
    shapes, tied = ir.param_shapes(), ir.param_aliases()
    problems = []
    for name, rule in marked:
        r, want = _Rule.of(rule), _count(rule.stored_shape)
        for at in _placeholders(r, shapes, tied):
            targets = [tied.get(t, t) for t in _targets(rule, at, shapes, tied)]
            held = sum(_count(shapes[t]) for t in targets)
            if held != want:
                parts = ", ".join(f"`{t}` {_shape(shapes[t])}" for t in targets[:4]) + (", ..." if len(targets) > 4 else "")
                problems.append((name, rule, f"`stored_shape` {_shape(rule.stored_shape)} holds {want:,} elements, but "
                                             f"the rule makes {held:,} ({parts})"))
                break
    return problems


def _unjoin(rule: WeightRule, value, names: list[str], reference: Mapping | None) -> list:
    """The inverse of `_joined`: `value` split along `concat` into the sources' sizes (the reference's,
    or equal parts without one)."""
    if len(names) == 1:
        return [value]
    axis = rule.concat
    if rule.combine != "concat":
        shapes = [tuple(reference[k].shape) if reference is not None and k in reference else None for k in names]
        return _unbuilt(rule, value, shapes)
    if reference is not None and all(k in reference for k in names):
        sizes = [int(reference[k].shape[axis]) for k in names]
    else:
        sizes = [value.shape[axis] // len(names)] * len(names)
    if sum(sizes) != value.shape[axis]:
        raise WeightMapError(f"rule `{rule.src}`: {_shape(value.shape)} does not split into {sizes} along "
                             f"axis {axis}")
    pieces, start = [], 0
    for n in sizes:
        index = (slice(None),) * axis + (slice(start, start + n),)
        pieces.append(value[index])
        start += n
    return pieces


def _strip(wmap: WeightMap, key: str) -> str:
    """`key` without the longest of the map's `strip_prefix`es that starts it (a key may start with none)."""
    prefix = max((p for p in wmap.strip_prefix if key.startswith(p)), key=len, default="")
    return key[len(prefix):]


def _keys(rules: list[_Rule], weights: Mapping, tied: dict) -> list[str]:
    """The reference keys to write without a reference to name them: one per rule and layer (and expert),
    each parameter written once. Where two rules read two layouts of the same parameters (Mixtral's fused
    and per-expert experts), the first rule in the map wins."""
    keys, written = {}, set()
    for r in rules:
        for at in _placeholders(r, weights, tied):
            targets = {tied.get(t, t) for t in _targets(r.rule, at, weights, tied)}
            if targets and not targets <= written:
                keys.setdefault(r.key(at))
                written |= targets
    return list(keys)


def _placeholders(r: _Rule, weights: Mapping, tied: dict) -> list[dict]:
    """The placeholder values (`i`, `e`) for which every target of rule `r` is among `weights`."""
    rule = r.rule
    first = rule.targets[0].replace("{e}", "0") if rule.unstack else rule.targets[0]
    if "{" not in first:
        return [{}] if _targets(rule, {}, weights, tied) else []
    if "{i}" not in first and _INDEX.search(rule.src):   # every layer's key onto one parameter
        return []
    pattern = _pattern(first)
    found = [{k: v for k, v in m.groupdict().items() if v is not None}
             for k in weights if (m := pattern.fullmatch(k))]
    found = [at for at in found if "i" not in at or int(at["i"]) in r.index.spec(r.index.ref(int(at["i"])))]
    found.sort(key=lambda at: (int(at.get("i", 0)), int(at.get("e", 0))))
    return [at for at in found if _targets(rule, at, weights, tied)]


def _targets(rule: WeightRule, at: dict, weights: Mapping, tied: dict) -> list[str]:
    """The rule's targets at placeholders `at`, experts expanded in order; [] when one is not in `weights`."""
    names = [_fill(t, at) for t in rule.targets]
    if rule.unstack:
        experts = 0
        while all(n.replace("{e}", str(experts)) in weights for n in names):
            experts += 1
        names = [n.replace("{e}", str(e)) for e in range(experts) for n in names]
    return names if names and all(tied.get(n, n) in weights for n in names) else []


def _by_expert(rule: WeightRule, targets: list[str]) -> list[list[str]]:
    k = len(rule.targets)
    return [targets[e:e + k] for e in range(0, len(targets), k)]


def _concat(parts: list, axis: int = 0):
    if len(parts) == 1:
        return parts[0]
    if hasattr(parts[0], "contiguous"):  # torch
        import torch
        return torch.cat(parts, dim=axis)
    import numpy as np
    return np.concatenate(parts, axis=axis)


def _stack(parts: list, axis: int = 0):
    if hasattr(parts[0], "contiguous"):
        import torch
        return torch.stack(parts, dim=axis)
    import numpy as np
    return np.stack(parts, axis=axis)


# ---------------------------------------------------------------- checking

def check_shapes(spec, weights: Mapping) -> list[str]:
    """What is wrong with `weights` as the spec's parameters (missing, unexpected, misshapen): [] if nothing."""
    expected = _ir(spec).param_shapes()
    problems = []
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing:
        problems.append(f"missing {len(missing)}: " + _few(missing))
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: " + _few(unexpected))
    for k, shape in expected.items():
        if k in weights and tuple(weights[k].shape) != tuple(shape):
            problems.append(f"`{k}` has shape {list(weights[k].shape)}, the spec needs {list(shape)}")
    return problems


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(f"`{k}`" for k in keys[:n]) + (", ..." if len(keys) > n else "")
