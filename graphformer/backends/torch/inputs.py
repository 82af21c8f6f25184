"""`example_inputs(spec)`: valid random inputs at the spec's example dims (or overrides).

Integer ids stay inside the vocabulary of the embeddings that read them; padding masks are
well-formed (a kept prefix of at least one token per row, the first row unpadded); floats are N(0, 1).
"""
from __future__ import annotations

import math

import torch

from ...analysis import memory
from ...base.dims import Dim
from ...ir.defaults import Fill
from ...ops.base import dtype_bytes


_TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool}


def filled(fill: Fill, given: dict) -> torch.Tensor:
    """A left-out input with a default: the constant at the shape the given required inputs' shapes say."""
    env: dict[str, int] = {}
    for sym, src, axis, divisor in fill.reads:
        size = given[src].shape[axis]
        env[sym] = size if divisor == 1 else size // divisor.evaluate(env)
    device = next((v.device for v in given.values() if isinstance(v, torch.Tensor)), None)
    return torch.full([_size(d, env) for d in fill.shape], fill.value, dtype=_TORCH_DTYPES[fill.dtype],
                      device=device)


def _size(d: Dim, env: dict):
    """A bare symbol is looked up, not evaluated: under torch.compile the sizes are symbolic."""
    if len(d.symbols) == 1:
        (s,) = d.symbols
        if d == Dim.sym(s):
            return env[s]
    return d.evaluate(env)


def resolve_dims(spec, dims: dict[str, int] | None) -> dict[str, int]:
    """The spec's example sizes with `dims` overrides applied; unknown names and sizes < 1 are errors."""
    return spec.ir.resolve_dims(dims)


def example_inputs(spec, dims: dict[str, int] | None = None, seed: int = 0, device="cpu", dtype=None) -> dict:
    """Random inputs by spec input name; `dtype` (e.g. torch.bfloat16) applies to the float ones."""
    ir = spec.ir
    env = resolve_dims(spec, dims)
    gen = torch.Generator().manual_seed(seed)
    needed = sum(math.prod(d.evaluate(env) for d in ir.node(n).shape.shape) * dtype_bytes(ir.node(n).shape.dtype)
                 for n in ir.inputs.values())
    memory.require(needed, "the example inputs", str(torch.device(device)))
    out = {}
    for name, node_name in ir.inputs.items():
        t = ir.node(node_name).shape
        shape = tuple(d.evaluate(env) for d in t.shape)
        users = ir.consumers(node_name)
        vocab = [u.attrs.vocab for u, _ in users if getattr(u.attrs, "vocab", None)]
        is_mask = any(port == "mask" for _, port in users)
        if t.dtype == "float32":
            x = torch.randn(shape, generator=gen).to(dtype or torch.float32)
        elif vocab:
            x = torch.randint(0, min(vocab), shape, generator=gen)
        elif is_mask:
            x = _prefix_mask(shape, gen).to(_TORCH_DTYPES[t.dtype])
        elif t.dtype == "bool":
            x = torch.rand(shape, generator=gen) < 0.5
        else:
            x = torch.randint(0, 2, shape, generator=gen)
        out[name] = x
    _mark_positions(ir, out, env)
    return {k: v.to(device) for k, v in out.items()}


def _mark_positions(ir, out: dict, env: dict[str, int]) -> None:
    """Token ids compared with an id whose marks a `scatter_tokens` fills (LLaVA's image token) hold that
    id exactly once per feature vector, after a first token in each row, and nowhere else."""
    for n in ir.nodes():
        if n.op != "scatter_tokens":
            continue
        test = ir.node(n.inputs["mask"])
        source = test.inputs.get("x") if test.op == "equal" else None
        name = next((k for k, v in ir.inputs.items() if v == source), None)
        if name is None:
            continue
        ids, token = out[name], test.attrs.to
        count = math.prod(d.evaluate(env) for d in ir.node(n.inputs["features"]).shape.shape[:-1])
        ids[ids == token] = 0 if token != 0 else 1
        rows, length = ids.shape
        if count % rows == 0 and count // rows < length:
            ids[:, 1:1 + count // rows] = token
        else:
            ids.view(-1)[:count] = token


def _prefix_mask(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """[B, n] bool: row b keeps its first len_b tokens; len_0 = n, the others uniform in 1..n."""
    assert len(shape) == 2, f"masks are [B, n], got {shape}"
    b, n = shape
    lengths = torch.randint(1, n + 1, (b,), generator=gen)
    lengths[0] = n
    return torch.arange(n)[None, :] < lengths[:, None]
