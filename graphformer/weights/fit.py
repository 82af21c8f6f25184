"""After a weight map's shape mismatches: which param values would make the spec fit the tensors.

Each mismatch pairs the spec's size with the reference's, dim by dim. Where the spec's size is exactly
one integer param's value (d_model 48 where the tensors say 40), that param is determined; the
suggestion is kept only if the spec, reloaded with it, fits every tensor. Params the shapes don't pin
down (heads: a q projection is d_model × d_model whatever the head count) are never guessed.
"""
from __future__ import annotations

import re

# the text convert_state_dict writes for a mismatch (graphformer/weights/maps.py `_place`)
MISMATCH = re.compile(r"shape mismatch: spec parameter `[^`]+` is \[([\d, ]*)\] but reference tensor `[^`]+` gives "
                      r"\[([\d, ]*)\]")


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d.strip()]


MAX_TRIES = 8   # assignments of ambiguous sizes tried (each reloads the spec and converts the tensors)


def candidate_params(params: dict, problems: list[str]) -> list[dict[str, int]]:
    """Assignments {param: value} read off the mismatched sizes, most likely first. A size that exactly one
    integer param has is that param; a size several params share (d_model 32 and max_len 32) is tried as
    each of them in turn. [] when the sizes contradict each other or say nothing."""
    ints = {k: v for k, v in params.items() if isinstance(v, int) and not isinstance(v, bool)}
    pairs: dict[int, int] = {}     # the spec's size → the tensors' size
    for problem in problems:
        m = MISMATCH.search(problem)
        if not m:
            continue
        ours, theirs = _dims(m.group(1)), _dims(m.group(2))
        if len(ours) != len(theirs):
            continue
        for a, b in zip(ours, theirs):
            if a != b:
                if pairs.get(a, b) != b:
                    return []
                pairs[a] = b
    options = [[(k, b) for k, v in ints.items() if v == a] for a, b in sorted(pairs.items())]
    options = [o for o in options if o]
    found = [{}]
    for choice in options:     # a product of the choices, bounded
        found = [{**f, k: v} for f in found for k, v in choice][:MAX_TRIES]
    return [f for f in found if f]


def determined_params(params: dict, problems: list[str]) -> dict[str, int] | None:
    """{param: value} read off the mismatched sizes where each size names one param, or None when they
    contradict each other."""
    found = candidate_params(params, problems)
    return found[0] if len(found) == 1 else ({} if found else None)


def suggestion(reload, params: dict, problems: list[str], fits) -> str:
    """A `--set ...` line for the error text, or "" when nothing is determined. `reload(overrides)`
    returns the spec with those params (or raises); `fits(spec)` says whether the tensors then load. Of
    the candidate assignments, the first that fits is suggested; a param whose default follows another
    (d_ff = 4·d_model) is left out when the suggestion fits without it."""
    found = candidate_params(params, problems)
    if not found:
        return ""
    for candidate in found:
        fitting = _fitting(reload, candidate, fits)
        if fitting is not None:
            sets = " ".join(f"{k}={v}" for k, v in fitting.items())
            return f"\nthe tensors fit this spec with `--set {sets}`"
    sets = " ".join(f"{k}={v}" for k, v in found[0].items())
    return (f"\nthe tensors say `--set {sets}`; other params they don't determine (such as heads) must change "
            f"too — the checkpoint's config has them")


def _fitting(reload, candidate: dict, fits) -> dict | None:
    """`candidate` (or the smallest part of it, dropping params one by one) if the spec then fits."""
    if not _fits(reload, candidate, fits):
        return None
    for k in list(candidate):   # derived defaults: d_ff follows d_model unless set
        rest = {q: v for q, v in candidate.items() if q != k}
        if rest and _fits(reload, rest, fits):
            candidate = rest
    return candidate


def _fits(reload, overrides: dict, fits) -> bool:
    try:
        return fits(reload(overrides))
    except Exception:   # the reloaded spec doesn't check (e.g. heads no longer divide d_model)
        return False
