"""Weight maps: a reference implementation's state dict → this spec's parameters, by declared rules.

A map is data in the spec (`weight_maps:`, see graphformer/spec.py `WeightMap` and docs/weight-maps.md):
rules `from` (a reference key, `{i}` standing for a layer index) → `to` (a spec parameter, or a list of
them: the fused reference tensor is split along dim 0 into that many equal parts), optionally
transposed first (GPT-2's Conv1D stores `[in, out]`). Conversion is all-or-nothing: every reference
tensor must be used by a rule or ignored, every spec parameter must be set, every shape must fit.
Anything else is a `WeightMapError` whose message names the reference key and the spec parameter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..diagnostics import did_you_mean
from ..spec import WeightMap, WeightRule
from ..summary import param_shapes

MAX_LISTED = 8      # problems listed in one error message; the rest are counted


class WeightMapError(Exception):
    """A weight map does not fit the state dict or the spec (the CLI reports it with exit status 1)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        super().__init__("\n".join(shown) + (f"\n... and {more} more" if more > 0 else ""))


def _pattern(text: str, wildcard: bool = False) -> re.Pattern:
    """`{i}` → a layer index (digits); with `wildcard`, `*` → any run of characters."""
    parts = [re.escape(p) for p in text.split("{i}")]
    if wildcard:
        parts = [p.replace(r"\*", ".*") for p in parts]
    # a second `{i}` in the same key must be the same index
    body = "".join(p + ("(?P<i>\\d+)" if k == 0 else "(?P=i)") for k, p in enumerate(parts[:-1])) + parts[-1]
    return re.compile(body)


def _shape(t) -> str:
    return "[" + ", ".join(str(int(s)) for s in t) + "]"


@dataclass
class _Rule:
    rule: WeightRule
    regex: re.Pattern

    @property
    def targets(self) -> list[str]:
        return [self.rule.dst] if isinstance(self.rule.dst, str) else list(self.rule.dst)

    def parts(self, key: str, tensor: torch.Tensor, index: str | None) -> list[tuple[str, torch.Tensor, str]]:
        """(spec name, tensor, how it was made) for each target; raises WeightMapError on bad geometry."""
        how = []
        if self.rule.transpose:
            if tensor.dim() != 2:
                raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} can't be transposed: "
                                     f"`transpose` needs a 2-D tensor")
            tensor = tensor.t()
            how.append("transposed")
        names = [t.replace("{i}", index) if index is not None else t for t in self.targets]
        if self.rule.unstack:  # [E, ...]: one slice per expert, each then placed (and split) as usual
            if tensor.dim() < 2:
                raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} can't be unstacked: "
                                     f"`unstack` needs a tensor with an expert axis first")
            return [part for e in range(tensor.shape[0])
                    for part in _split(key, tensor[e], [n.replace("{e}", str(e)) for n in names],
                                       how + [f"expert {e}"])]
        return _split(key, tensor, names, how)


def _split(key: str, tensor: torch.Tensor, names: list[str], how: list[str]) -> list[tuple[str, torch.Tensor, str]]:
    """The tensor as one target, or split evenly along dim 0 into the targets (a fused q, k, v)."""
    if len(names) == 1:
        return [(names[0], tensor.contiguous(), ", ".join(how))]
    n = len(names)
    if tensor.dim() == 0 or tensor.shape[0] % n:
        raise WeightMapError(f"reference tensor `{key}` {_shape(tensor.shape)} does not split evenly into {n} "
                             f"parts along dim 0 for {', '.join(f'`{x}`' for x in names)}")
    chunks = tensor.chunk(n, dim=0)
    return [(name, c.contiguous(), ", ".join(how + [f"part {k + 1} of {n}"]))
            for k, (name, c) in enumerate(zip(names, chunks))]


def get_map(spec, mapping: str) -> WeightMap:
    ir = getattr(spec, "ir", spec)
    maps = ir.weight_maps
    if mapping in maps:
        return maps[mapping]
    if not maps:
        raise WeightMapError(f"spec `{ir.name}` declares no weight maps (add a `weight_maps:` section)")
    hint = did_you_mean(mapping, maps)
    known = ", ".join(f"`{m}`" for m in maps)
    raise WeightMapError(f"spec `{ir.name}` has no weight map `{mapping}`"
                         + (f" (did you mean `{hint}`?)" if hint else "") + f"; known maps: {known}")


def _compile(wmap: WeightMap) -> tuple[list[_Rule], list[re.Pattern]]:
    # placeholders were validated with the spec (WeightRule): only `{i}`, and in `to` only if in `from`
    return [_Rule(r, _pattern(r.src)) for r in wmap.rules], [_pattern(p, wildcard=True) for p in wmap.ignore]


def convert_state_dict(spec, state_dict: dict, mapping: str) -> dict[str, torch.Tensor]:
    """Map a reference state dict onto the spec's parameter names (`param_shapes` keys) through `mapping`.

    Returns a new dict `{spec parameter: tensor}` with exactly the spec's parameters, contiguous, in the
    reference's dtype. Raises WeightMapError listing every problem found.
    """
    ir = getattr(spec, "ir", spec)
    wmap = get_map(ir, mapping)
    shapes = param_shapes(ir)
    # a tied layer's weight is its owner's: `lm_head.weight` names `tok.weight` when the head is tied
    tied = {f"{n.name}.weight": f"{n.attrs.tied}.weight" for n in ir.nodes() if getattr(n.attrs, "tied", None)}
    rules, ignores = _compile(wmap)
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}            # spec parameter → the reference key that set it
    problems: list[str] = []
    rejected: set[str] = set()
    for key, tensor in state_dict.items():
        name = key[len(wmap.strip_prefix):] if wmap.strip_prefix and key.startswith(wmap.strip_prefix) else key
        hits = [(r, m) for r in rules if (m := r.regex.fullmatch(name))]
        if not hits:
            if not any(p.fullmatch(name) for p in ignores):
                problems.append(f"reference tensor `{key}` is not used by map `{mapping}` — add a rule or an "
                                f"`ignore` pattern")
            continue
        if not isinstance(tensor, torch.Tensor):
            problems.append(f"reference entry `{key}` is a {type(tensor).__name__}, not a tensor")
            continue
        for rule, m in hits:
            try:
                parts = rule.parts(key, tensor, m.groupdict().get("i"))
            except WeightMapError as e:
                problems.extend(e.problems)
                continue
            for target, value, how in parts:
                target = tied.get(target, target)
                problem = _place(out, source, shapes, target, value, key, how, mapping)
                if problem:
                    problems.append(problem)
                    rejected.add(target)
    # a parameter whose tensor was rejected is already reported: don't also call it "not set"
    problems += [f"spec parameter `{p}` {_shape(s)} is not set by map `{mapping}`: {_why_unset(p, rules, wmap)}"
                 for p, s in shapes.items() if p not in out and p not in rejected]
    if problems:
        raise WeightMapError(problems)
    return {p: out[p] for p in shapes}


def _why_unset(param: str, rules: list[_Rule], wmap: WeightMap) -> str:
    """Name the reference tensor the map expected for `param`, so both sides of the gap are visible."""
    for r in rules:
        for t in r.targets:
            if m := _pattern(t).fullmatch(param):
                i = m.groupdict().get("i")
                key = r.rule.src.replace("{i}", i) if i is not None else r.rule.src
                prefix = f" (or `{wmap.strip_prefix}{key}`)" if wmap.strip_prefix else ""
                return f"the reference has no tensor `{key}`{prefix}"
    return "no rule's `to` names it"


def _place(out, source, shapes, target, value, key, how, mapping) -> str | None:
    """Put one converted tensor at `target`, or return the problem."""
    if target not in shapes:
        hint = did_you_mean(target, shapes, max_distance=3)
        if hint and re.sub(r"\d+", "#", hint) == re.sub(r"\d+", "#", target):
            note = " (only a layer index differs: does the spec have as many layers as the reference?)"
        else:
            note = f" (did you mean `{hint}`?)" if hint else ""
        return (f"map `{mapping}` sends reference tensor `{key}` to `{target}`, which is not a parameter of "
                f"the spec{note}")
    want = tuple(shapes[target])
    if tuple(value.shape) != want and [d for d in value.shape if d != 1] == [d for d in want if d != 1]:
        # only unit axes differ (ViT's cls_token [1, 1, D] → [1, D]): reshaping moves no element
        value = value.reshape(want)
    if tuple(value.shape) != want:
        note = f" ({how})" if how else ""
        return (f"shape mismatch: spec parameter `{target}` is {_shape(want)} but reference tensor `{key}` gives "
                f"{_shape(value.shape)}{note}")
    if target in out:
        # two reference keys for one parameter: only a tie (e.g. GPT-2's lm_head = wte) may do that
        prev = out[target]
        same = value.device.type == "meta" or prev.device.type == "meta" or torch.equal(prev, value.to(prev))
        if not same:
            return (f"reference tensors `{source[target]}` and `{key}` both set spec parameter `{target}` but "
                    f"differ (the spec ties them to one parameter)")
        return None
    out[target], source[target] = value, key
    return None


def load_weights(module: torch.nn.Module, state_dict: dict, mapping: str, spec=None) -> torch.nn.Module:
    """Load a reference state dict into a module built by `graphformer.build`, through a weight map.

    `spec` defaults to the module's own (`module.spec`, set by the builder). Strict: the converted dict
    has exactly the spec's parameters, so `load_state_dict(strict=True)` checks the build agrees too.
    """
    spec = spec if spec is not None else getattr(module, "spec", None)
    if spec is None:
        raise TypeError("load_weights needs the spec: pass `spec=` (this module has no `.spec`)")
    module.load_state_dict(convert_state_dict(spec, state_dict, mapping), strict=True)
    return module
