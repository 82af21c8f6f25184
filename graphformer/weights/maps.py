"""Weights without torch: read a state dict from a file, map a reference's names onto the spec's, check
the result against the spec's parameter shapes. Torch (`backends/torch/weights.py`) and ONNX
(`backends/onnx/weights.py`) are thin adapters over this module.

Everything here works on arrays of any kind that slice, reshape and transpose alike: numpy arrays (what
safetensors gives without torch) and torch tensors (a reference model's `state_dict()`, even on the meta
device). A converted tensor is of the same kind as the one it came from.

A map is data in the IR (`ir.WeightMap`, from the spec's `weight_maps:`; docs/weight-maps.md): rules
`from` (a reference key, `{i}` standing for a layer index) → `to` (a spec parameter, or several: the
fused reference tensor is split along dim 0 into that many equal parts, as contiguous blocks,
interleaved per head or in alternate rows, as the rule's `split` says), optionally transposed first
(GPT-2's Conv1D stores `[in, out]`), reshaped to the parameter's shape and scaled last; and `zero`
rules for parameters the reference lacks (a bias it has none of). Conversion is all-or-nothing: every
reference tensor must be used by a rule or ignored, every spec parameter must be set, every shape must
fit. Anything else is a `WeightMapError` whose message names the reference key and the spec parameter.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from ..base.diagnostics import did_you_mean
from ..base.errors import WeightFileError, WeightMapError
from ..base.reading import LIMITS, FileProblem, open_regular
from ..ir import IRGraph, WeightMap, WeightRule

__all__ = ["WeightMapError", "WeightFileError", "read_state_dict", "get_map", "convert_state_dict",
           "to_reference", "check_shapes"]


# ---------------------------------------------------------------- reading

def read_state_dict(path: str) -> dict:
    """A state dict from .safetensors (numpy arrays, no torch needed) or from .pt / .bin (torch.load,
    `weights_only`, so a file can't run code), or from a save_pretrained directory (its files one after
    another, graphformer/weights/checkpoint.py, each confined to the directory). Only regular files are read
    (reading.open_regular); a safetensors header is bounded before the library parses it, and both
    formats are memory-mapped, so no tensor is larger than its file. Raises WeightFileError."""
    path = os.fspath(path)
    if os.path.isdir(path):
        from .checkpoint import checkpoint_files
        return {k: v for f in checkpoint_files(path) for k, v in read_state_dict(f).items()}
    try:
        fd, st = open_regular(path)
    except FileProblem as e:
        raise WeightFileError(f"weights file: {e}") from None
    with os.fdopen(fd, "rb") as fh:
        if path.endswith(".safetensors"):
            return _read_safetensors(path, fh, st.st_size)
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


def _read_safetensors(path: str, fh, size: int) -> dict:
    """The file's tensors, read by the safetensors library (memory-mapped) after its header's length
    is checked against the file and LIMITS["safetensors header"]. The library opens the descriptor we
    checked (/proc/self/fd), not the name again, where the system has one."""
    head = fh.read(8)
    header = int.from_bytes(head, "little") if len(head) == 8 else -1
    limit = LIMITS["safetensors header"]
    if header < 2 or header + 8 > size:
        raise WeightFileError(f"weights file `{path}` is not a safetensors file (its header length is missing "
                              f"or longer than the file)")
    if header > limit:
        raise WeightFileError(f"weights file `{path}`: its safetensors header is {header:,} bytes; the limit "
                              f"is {limit:,}")
    try:
        from safetensors import safe_open
    except ImportError:
        raise WeightFileError("reading .safetensors weights needs the `safetensors` package") from None
    source = _same_file(path, fh)
    try:
        with safe_open(source, framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except TypeError:
        pass  # a dtype numpy lacks (bfloat16): read through torch below
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise WeightFileError(f"cannot read weights file `{path}`: {_named(e, source, path)}") from None
    try:
        with safe_open(source, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except ImportError:
        raise WeightFileError(f"`{path}` holds a dtype numpy cannot read (bfloat16?); install torch") from None
    except Exception as e:
        raise WeightFileError(f"cannot read weights file `{path}`: {_named(e, source, path)}") from None


def _named(exc: Exception, source: str, path: str) -> str:
    return str(exc).replace(source, path)


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
    if hasattr(a, "contiguous") and hasattr(b, "contiguous"):
        import torch
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
    """`{i}` → a layer index (digits); everything else literal."""
    parts = [re.escape(p) for p in text.split("{i}")]
    # a second `{i}` in the same key must be the same index
    body = "".join(p + ("(?P<i>\\d+)" if k == 0 else "(?P=i)") for k, p in enumerate(parts[:-1])) + parts[-1]
    return re.compile(body)


# A layer index in `from`: `{i}` any; `{i+K}` reference index K + i for spec index i ≥ 0 (the layers of a
# second `repeat`, after K of a first); `{i<K}` an index below K (the first `repeat`'s). The expander has
# replaced a param name K by its value.
_INDEX = re.compile(r"\{i(?:([+<])(\d+))?\}")


@dataclass
class _Rule:
    rule: WeightRule
    regex: re.Pattern | None
    offset: int = 0                  # `{i+K}`: K
    limit: int | None = None         # `{i<K}`: K

    @classmethod
    def of(cls, rule: WeightRule) -> "_Rule":
        if rule.src is None:
            return cls(rule, None)
        m = _INDEX.search(rule.src)
        kind, k = (m.group(1), int(m.group(2))) if m and m.group(1) else (None, 0)
        return cls(rule, _pattern(_INDEX.sub("{i}", rule.src)), k if kind == "+" else 0, k if kind == "<" else None)

    def match(self, name: str) -> tuple[bool, str | None]:
        """Whether reference key `name` is this rule's, and the spec's layer index it stands for."""
        m = self.regex.fullmatch(name)
        if not m:
            return False, None
        i = m.groupdict().get("i")
        if i is None:
            return True, None
        j = int(i) - self.offset
        return (j >= 0 and (self.limit is None or j < self.limit)), str(j)

    def key(self, index: str | None) -> str:
        """The reference key for spec layer `index` (the inverse of `match`)."""
        return _INDEX.sub(str(int(index) + self.offset), self.rule.src) if index is not None else self.rule.src

    def parts(self, key: str, tensor, index: str | None) -> list[tuple[str, object, str]]:
        """(spec name, tensor, how it was made) for each target; raises WeightMapError on bad geometry."""
        how = []
        if self.rule.transpose:
            # with `unstack`, each expert's matrix is transposed: [E, a, b] → [E, b, a] (GPT-OSS's experts)
            rank = 3 if self.rule.unstack else 2
            if len(tensor.shape) != rank:
                raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} can't be transposed: "
                                     f"`transpose` needs a {rank}-D tensor" + (" with `unstack`" if rank == 3 else ""))
            tensor = _transposed(tensor, self.rule)
            how.append("transposed")
        names = [t.replace("{i}", index) if index is not None else t for t in self.rule.targets]
        if self.rule.unstack:  # [E, ...]: one slice per expert, each then placed (and split) as usual
            if len(tensor.shape) < 2:
                raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} can't be unstacked: "
                                     f"`unstack` needs a tensor with an expert axis first")
            parts = [part for e in range(tensor.shape[0])
                     for part in _split(key, tensor[e], [n.replace("{e}", str(e)) for n in names],
                                        how + [f"expert {e}"], self.rule)]
        else:
            parts = _split(key, tensor, names, how, self.rule)
        if self.rule.scale is None:
            return parts
        s = self.rule.scale
        return [(name, _scaled(key, value, s), ", ".join(filter(None, [h, f"scaled by {s:g}"])))
                for name, value, h in parts]

    def zero_targets(self, shapes: Mapping) -> list[str]:
        """The spec parameters a `zero` rule names: its targets, `{i}` standing for any layer index."""
        patterns = [_pattern(t) for t in self.rule.targets]
        return [p for p in shapes if any(r.fullmatch(p) for r in patterns)]


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


def _split(key: str, tensor, names: list[str], how: list[str], rule: WeightRule) -> list[tuple[str, object, str]]:
    """The tensor as one target, or split along dim 0 into the targets (a fused q, k, v) by the rule's
    layout: `blocks`, one contiguous block per target; `heads`, [heads, targets, part]: per head, one
    slice per target (GPT-NeoX's and BLOOM's query_key_value); `interleaved`, [rows, targets]: row r goes
    to target r mod n (GPT-OSS's gate_up_proj, gate and up in alternate rows)."""
    if len(names) == 1:
        return [(names[0], _contiguous(tensor), ", ".join(how))]
    if rule.split == "interleaved":
        n, rest = len(names), tuple(tensor.shape[1:])
        if len(tensor.shape) == 0 or tensor.shape[0] % n:
            raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} does not split evenly into {n} "
                                 f"alternating parts along dim 0 for {', '.join(f'`{x}`' for x in names)}")
        grid = tensor.reshape((tensor.shape[0] // n, n) + rest)
        return [(name, _contiguous(grid[:, k]), ", ".join(how + [f"rows {k}, {k} + {n}, ... (part {k + 1} of {n})"]))
                for k, name in enumerate(names)]
    n, groups = len(names), (rule.heads if rule.split == "heads" else 1)
    if len(tensor.shape) == 0 or tensor.shape[0] % (n * groups):
        into = f"{groups} heads × {n} parts" if rule.split == "heads" else f"{n} parts"
        raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} does not split evenly into {into} "
                             f"along dim 0 for {', '.join(f'`{x}`' for x in names)}")
    size = tensor.shape[0] // (n * groups)
    rest = tuple(tensor.shape[1:])
    grid = tensor.reshape((groups, n, size) + rest)           # blocks: groups = 1, the parts one after another
    layout = f"split by {groups} heads, " if rule.split == "heads" else ""
    return [(name, _contiguous(grid[:, k].reshape((groups * size,) + rest)),
             ", ".join(how + [f"{layout}part {k + 1} of {n}"])) for k, name in enumerate(names)]


def _fuse(parts: list, rule: WeightRule):
    """The inverse of `_split`: the targets' tensors back into the reference's fused layout."""
    if len(parts) > 1 and rule.split == "interleaved":   # rows alternate again: [rows, targets, ...]
        rest = tuple(parts[0].shape[1:])
        return _stack(parts, axis=1).reshape((-1,) + rest)
    if len(parts) == 1 or rule.split != "heads":
        return _concat(parts)
    groups = rule.heads
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


def convert_state_dict(spec, state_dict: Mapping, mapping: str) -> dict:
    """Map a reference state dict onto the spec's parameter names (`ir.param_shapes()` keys) through
    `mapping` (a Spec or an IRGraph either way).

    Returns a new dict `{spec parameter: array}` with exactly the spec's parameters, contiguous, of the
    reference's kind and dtype. Raises WeightMapError listing every problem found.
    """
    ir = _ir(spec)
    wmap = get_map(ir, mapping)
    shapes = ir.param_shapes()
    # a tied layer's weight is its owner's: `lm_head.weight` names `tok.weight` when the head is tied
    tied = {f"{n}.weight": f"{owner}.weight" for n, owner in ir.ties.items()}
    # placeholders were validated with the spec: `{i}` (in `to` only if in `from`), `{e}` with `unstack`
    rules = [_Rule.of(r) for r in wmap.rules if not r.zero]
    zeros = [_Rule(r, None) for r in wmap.rules if r.zero]
    ignores = [_Glob(p) for p in wmap.ignore]
    out: dict = {}
    source: dict[str, str] = {}            # spec parameter → the reference key that set it
    problems: list[str] = []
    rejected: set[str] = set()
    for key, tensor in state_dict.items():
        name = key[len(wmap.strip_prefix):] if wmap.strip_prefix and key.startswith(wmap.strip_prefix) else key
        hits = [(r, i) for r in rules for ok, i in [r.match(name)] if ok]
        if not hits:
            if not any(p.fullmatch(name) for p in ignores):
                problems.append(f"reference tensor `{key}` is not used by map `{mapping}` — add a rule or an "
                                f"`ignore` pattern")
            continue
        if not _is_array(tensor):
            problems.append(f"reference entry `{key}` is a {type(tensor).__name__}, not a tensor")
            continue
        for rule, index in hits:
            try:
                parts = rule.parts(key, tensor, index)
            except WeightMapError as e:
                problems.extend(e.problems)
                continue
            for target, value, how in parts:
                target = tied.get(target, target)
                problem = _place(out, source, shapes, target, value, key, how, mapping, rule.rule.reshape,
                                 ir.switched_off)
                if problem:
                    problems.append(problem)
                    rejected.add(target)
    problems += _place_zeros(out, source, shapes, zeros, state_dict, mapping)
    # a parameter whose tensor was rejected is already reported: don't also call it "not set"
    problems += [f"spec parameter `{p}` {_shape(s)} is not set by map `{mapping}`: {_why_unset(p, rules, wmap)}"
                 for p, s in shapes.items() if p not in out and p not in rejected]
    if problems:
        raise WeightMapError(problems)
    return {p: out[p] for p in shapes}


def _place_zeros(out, source, shapes, zeros: list[_Rule], state_dict: Mapping, mapping: str) -> list[str]:
    """Set the parameters of `zero` rules to zeros of the reference's kind and dtype. A reference tensor
    that also set one must be zero itself: the map says the reference has no such tensor."""
    problems = []
    like = next((v for v in state_dict.values() if _is_array(v) and _is_float(v)), None)
    for rule in zeros:
        for target in rule.zero_targets(shapes):
            if target not in out:
                out[target], source[target] = _zeros(like, shapes[target]), "(zero)"
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
                key = r.key(m.groupdict().get("i"))
                prefix = f" (or `{wmap.strip_prefix}{key}`)" if wmap.strip_prefix else ""
                return f"the reference has no tensor `{key}`{prefix}"
    return "no rule's `to` names it"


def _place(out, source, shapes, target, value, key, how, mapping, reshape=False,
           switched_off=None) -> str | None:
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
    out[target], source[target] = value, key
    return None


# ---------------------------------------------------------------- the other way: spec → reference

def to_reference(spec, weights: Mapping, mapping: str, reference: Mapping | None = None) -> dict:
    """The spec's parameters under the reference's names: the inverse of `convert_state_dict`, so
    `convert_state_dict(spec, to_reference(spec, w, m), m)` gives `w` back.

    `reference`: the reference's own state dict (tensors or anything with a `.shape`, e.g.
    `ref.state_dict()`) to name exactly its keys, with the map's `strip_prefix` where it has it and in its
    shapes; keys the map ignores (buffers) are left out. Without it: one key per rule and layer, without
    the prefix. Fused targets are concatenated along dim 0, transposed ones transposed back, unstacked
    experts stacked. Raises WeightMapError naming each key no rule can make and each parameter unwritten.
    """
    ir = _ir(spec)
    wmap = get_map(ir, mapping)
    tied = {f"{n}.weight": f"{owner}.weight" for n, owner in ir.ties.items()}
    rules = [_Rule.of(r) for r in wmap.rules if not r.zero]
    # parameters a `zero` rule declares absent from the reference: nothing to write back
    absent = {p for r in wmap.rules if r.zero for p in _Rule(r, None).zero_targets(weights)}
    if reference is None:
        keys = [r.key(i if i != "" else None) for r in rules for i in _layers(r, weights, tied)]
    else:
        keys = [k for k in reference
                if not any(p.fullmatch(_strip(wmap, k)) for p in (_Glob(g) for g in wmap.ignore))]
    out, problems, used = {}, [], set()
    for key in keys:
        name = _strip(wmap, key)
        hit = next(((r, i) for r in rules for ok, i in [r.match(name)] if ok), None)
        if hit is None:
            problems.append(f"reference tensor `{key}` is made by no rule of map `{mapping}`")
            continue
        rule, index = hit[0].rule, hit[1]
        targets = [tied.get(t, t) for t in _targets(rule, index, weights, tied)]
        if not targets:
            wanted = [t.replace("{i}", index) if index is not None else t for t in rule.targets]
            problems.append(f"reference tensor `{key}` needs spec parameter(s) {_few(wanted)}, which the weights lack")
            continue
        value = _stack([_fuse([weights[t] for t in group], rule) for group in _by_expert(rule, targets)]) \
            if rule.unstack else _fuse([weights[t] for t in targets], rule)
        if rule.transpose:
            value = _transposed(value, rule)
        if rule.scale is not None:
            value = value / rule.scale
        if reference is not None and tuple(value.shape) != tuple(reference[key].shape):
            # unit axes, or `reshape: true` (same element count): convert_state_dict checks
            value = value.reshape(tuple(reference[key].shape))
        out[key] = _contiguous(value)
        used.update(targets)
    problems += [f"spec parameter `{p}` is written by no rule of map `{mapping}`" for p in weights
                 if p not in used and p not in absent]
    if problems:
        raise WeightMapError(problems)
    return out


def _strip(wmap: WeightMap, key: str) -> str:
    return key[len(wmap.strip_prefix):] if wmap.strip_prefix and key.startswith(wmap.strip_prefix) else key


def _layers(r: _Rule, weights: Mapping, tied: dict) -> list[str]:
    """The layer indices (as text) for which every target of rule `r` is among `weights` ([""] without `{i}`)."""
    rule = r.rule
    first = rule.targets[0].replace("{e}", "0")
    if not _INDEX.search(rule.src):
        return [""] if _targets(rule, None, weights, tied) else []
    if "{i}" not in first:   # every layer's key onto one parameter: no index to name them by
        return []
    found = sorted({m.group("i") for k in weights if (m := _pattern(first).fullmatch(k))}, key=int)
    return [i for i in found if (r.limit is None or int(i) < r.limit) and _targets(rule, i, weights, tied)]


def _targets(rule: WeightRule, index: str | None, weights: Mapping, tied: dict) -> list[str]:
    """The rule's targets at layer `index`, experts expanded in order; [] when one is not in `weights`."""
    names = [t.replace("{i}", index) if index is not None else t for t in rule.targets]
    if rule.unstack:
        experts = 0
        while all(n.replace("{e}", str(experts)) in weights for n in names):
            experts += 1
        names = [n.replace("{e}", str(e)) for e in range(experts) for n in names]
    return names if names and all(tied.get(n, n) in weights for n in names) else []


def _by_expert(rule: WeightRule, targets: list[str]) -> list[list[str]]:
    k = len(rule.targets)
    return [targets[e:e + k] for e in range(0, len(targets), k)]


def _concat(parts: list):
    if len(parts) == 1:
        return parts[0]
    if hasattr(parts[0], "contiguous"):  # torch
        import torch
        return torch.cat(parts)
    import numpy as np
    return np.concatenate(parts)


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
