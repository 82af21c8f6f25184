"""Floating dtype names as users write them: `bf16`, `fp16`, `fp32` (and `half`, `float`) are aliases of
the canonical `bfloat16`, `float16`, `float32` everywhere a dtype is taken (CLI flags and Python calls)."""
from __future__ import annotations

import argparse

FLOAT_DTYPES = ("float32", "bfloat16", "float16")
ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def canonical_dtype(name):
    """The canonical name of a dtype name or alias (case-insensitive); anything else is returned as given,
    for the caller's own refusal to name."""
    if not isinstance(name, str):
        return name
    key = name.strip().lower()
    return ALIASES.get(key, key) if ALIASES.get(key, key) in FLOAT_DTYPES else name


def dtype_arg(text: str) -> str:
    """argparse `type=` for `--dtype`: a canonical name, or argparse's usage error (exit 2)."""
    name = canonical_dtype(text)
    if name not in FLOAT_DTYPES:
        raise argparse.ArgumentTypeError(f"`{text}` is not a dtype (use {', '.join(FLOAT_DTYPES)}, or bf16, fp16, "
                                         f"fp32)")
    return name
