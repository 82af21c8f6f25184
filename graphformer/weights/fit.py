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


def determined_params(params: dict, problems: list[str]) -> dict[str, int] | None:
    """{param: value} read off the mismatched sizes, or None when they contradict each other."""
    ints = {k: v for k, v in params.items() if isinstance(v, int) and not isinstance(v, bool)}
    found: dict[str, int] = {}
    for problem in problems:
        m = MISMATCH.search(problem)
        if not m:
            continue
        ours, theirs = _dims(m.group(1)), _dims(m.group(2))
        if len(ours) != len(theirs):
            continue
        for a, b in zip(ours, theirs):
            if a == b:
                continue
            names = [k for k, v in ints.items() if v == a]
            if len(names) != 1:      # no param or several of this size: not determined here
                continue
            if found.get(names[0], b) != b:
                return None
            found[names[0]] = b
    return found


def suggestion(reload, params: dict, problems: list[str], fits) -> str:
    """A `--set ...` line for the error text, or "" when nothing is determined. `reload(overrides)`
    returns the spec with those params (or raises); `fits(spec)` says whether the tensors then load."""
    found = determined_params(params, problems)
    if not found:
        return ""
    sets = " ".join(f"{k}={v}" for k, v in found.items())
    try:
        ok = fits(reload(found))
    except Exception:   # the reloaded spec doesn't check (e.g. heads no longer divide d_model)
        ok = False
    if ok:
        return f"\nthe tensors fit this spec with `--set {sets}`"
    return (f"\nthe tensors say `--set {sets}`; other params they don't determine (such as heads) must change "
            f"too — the checkpoint's config has them")
