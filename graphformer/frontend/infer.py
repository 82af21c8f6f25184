"""Shape inference and structural lint over the IR: one topological walk, errors collected per node.

A node whose rule fails (or whose input is unknown) gets shape None, so its consumers stay quiet.

A compact IR (`ir.Repeat`) is analysed per distinct instantiation: each body is inferred once, and only
if every repetition that uses it gives it the same input types; lint follows liveness backwards through
the repetitions. Whenever that finds anything to report (or can't be sure), the IR is unrolled and the
per-node walk below runs instead, so diagnostics are those of the full graph.
"""
from __future__ import annotations

import copy

from ..base.diagnostics import Diagnostic, Label
from ..base.dims import Dim, DimError, parse
from ..base.graphs import CycleError
from ..ir import BlockInputCheck, IRGraph, Repeat
from ..ops import REGISTRY
from ..ops.base import ShapeError


def lint(ir: IRGraph) -> list[Diagnostic]:
    """Cycles (errors) and nodes that feed no output (warnings).

    Each cycle is reported once; its nodes are marked broken and their incoming edges dropped, so the
    rest of the graph can still be inferred (collect, don't stop).
    """
    if ir.compact and _all_live(ir, set(ir.outputs.values()), {}) is not None:
        return []
    diags = []
    for cycle, part in ir.cycles():
        names = cycle + cycle[:1]
        first = ir.node(names[0])
        diags.append(Diagnostic("GF111", "cycle: " + " → ".join(f"`{ir.node(n).short}`" for n in names), first.span,
                                node=first.name,
                                labels=[Label(ir.node(n).span, f"`{ir.node(n).short}` is part of the cycle")
                                        for n in names[1:-1] if ir.node(n).span],
                                help="a node can only consume values computed before it"))
        for n in part:
            ir.node(n).meta["broken"] = True
            ir.cut_inputs(n)
    used = ir.live()
    seen_spans = set()
    for n in ir.nodes():
        if n.name in used or n.meta.get("broken") or n.span in seen_spans or n.meta.get("default") is not None:
            continue   # an unread defaulted input (DeBERTa's token types at type_vocab 0) asks nothing of a caller
        seen_spans.add(n.span)
        what = "input" if n.op == "input" else "node"
        rep = next((f for f in reversed(n.scope) if f.index is not None), None)
        where = "" if rep is None else (
            f" (in the last repetition of `{rep.path}`)" if rep.index == rep.count - 1 else
            f" (in repetition {rep.index} of `{rep.path}`: the next repetition doesn't use it)")
        diags.append(Diagnostic("GF112", f"{what} `{n.short}` does not contribute to any output{where}", n.span,
                                severity="warning", node=n.name,
                                help="use it, list it under `outputs`, or delete it"))
    return diags


def infer(ir: IRGraph) -> list[Diagnostic]:
    if ir.compact:
        if _compact_infer(ir, {}) and not any(ir.value(src).meta.get("optional") for src in ir.outputs.values()):
            return []
        ir.unroll()
        for n in ir.nodes():   # what the compact attempt marked is decided again below
            if n.op != "input":
                for k in ("optional", "optional_ports", "optional_from"):
                    n.meta.pop(k, None)
    diags = []
    ties = ir.ties
    known: dict[tuple, object] = {}   # (op, attrs, input types) -> shape: a rule is pure, repetitions share it
    for n in ir.nodes():
        e = _infer_node(ir, n, ties, known)
        if e is not None:
            diags.append(_shape_diagnostic(ir, n, e))
    for out, src in ir.outputs.items():
        node = ir.node(src)
        if node.meta.get("optional"):
            origin = node.meta.get("optional_from", src)
            via = "" if origin == src else f" (`{node.short}` is computed from it)"
            diags.append(Diagnostic("GF127", f"output `{out}` needs the optional input `{origin}`{via}, which may "
                                    "be omitted", ir.output_spans.get(out) or node.span, node=node.name,
                                    help="an optional input may only feed what ends in optional inputs of ops "
                                         "(an attention `mask`, rotary `positions`); remove `optional: true`"))
    return _dedupe_repeats(diags)


def _infer_node(ir: IRGraph, n, ties: dict, known: dict) -> ShapeError | None:
    """Set `n.shape` from its inputs' (None when unknown or wrong); the rule's error, if any."""
    if n.op == "input":
        return None
    if n.meta.get("broken") or n.op not in REGISTRY:
        n.shape = None
        return None
    ins = {p: ir.value(s).shape for p, s in n.inputs.items()}
    if any(v is None for v in ins.values()):
        n.shape = None
        return None
    required = REGISTRY[n.op].required_ports
    # computed from a value that may be absent: absent with it (a padding mask interleaved, say)
    absent = [p for p, src in n.inputs.items()
              if ir.value(src).meta.get("optional") and (p in required or REGISTRY[n.op].variadic)]
    if absent:
        n.meta.update(optional=True, optional_ports=absent,
                      optional_from=ir.value(n.inputs[absent[0]]).meta.get("optional_from", n.inputs[absent[0]]))
    key = None if n.name in ties else (n.op, id(n.attrs), tuple(ins.items()))
    if key is not None and key in known:
        n.shape = known[key]
        return None
    try:
        n.shape = _apply_rule(ir, n, ins, ties)
        if key is not None:
            known[key] = n.shape
    except ShapeError as e:
        n.shape = None
        return e
    return None


def _shape_diagnostic(ir: IRGraph, n, e: ShapeError) -> Diagnostic:
    if REGISTRY[n.op].variadic:  # ports `xs0`, `xs1` mean nothing to a user: name the producers
        for port, src in n.inputs.items():
            e.message = e.message.replace(f"`{port}`", f"`{ir.node(src).short}`")
    labels = []
    if e.port in n.inputs:
        src = ir.node(n.inputs[e.port])
        if src.span:
            labels.append(Label(src.span, f"`{src.short}` produces {src.shape}"))
    notes = [f"in block `{f.block}`" + (f" (repetition {f.index} of {f.count})" if f.index is not None else "")
             + (f", called at {f.call_span}" if f.call_span else "") for f in reversed(n.scope)]
    span = n.meta.get("attr_spans", {}).get(e.attr) or n.span
    refs = n.meta.get("param_refs", {})
    params = refs.get(e.attr, []) if e.attr else sorted({p for r in refs.values() for p in r})
    origins = [f"`{p}` = {ir.params[p]!r} comes from {ir.param_origin[p]}" for p in params
               if p in ir.param_origin]
    return Diagnostic(e.code, f"`{n.short}` ({n.op}): {e.message}", span, node=n.name,
                      labels=labels, notes=notes[:1] + origins, help=e.help or _width_hint(ir, n, e))


# ---------------------------------------------------------------- compact: once per distinct instantiation

def _compact_infer(g: IRGraph, known: dict) -> bool:
    """Shapes of `g`'s nodes and of its compact calls' bodies; False where a full walk must decide
    (an error, an unknown shape, a cycle, or a body whose repetitions see different input types)."""
    try:
        order = g.entry_order()
    except CycleError:
        return False
    ties = g.ties
    for e in order:
        if isinstance(e, Repeat):
            if not _infer_repeat(g, e, known):
                return False
        elif e.op != "input" and (e.meta.get("broken") or _infer_node(g, e, ties, known) is not None
                                  or e.shape is None):
            return False
    return True


def _infer_repeat(g: IRGraph, rep: Repeat, known: dict) -> bool:
    done: dict[int, tuple] = {}   # body -> the input types it was inferred at
    for i in range(rep.count):
        k = rep.which[i]
        body = rep.bodies[k]
        sig = []
        for x in body.inputs:
            if i and x in rep.carried:
                prev = rep.bodies[rep.which[i - 1]]
                src, name = prev.value(prev.outputs[x]), None
            else:
                src, name = g.value(rep.feeds[x]), rep.feeds[x]
            if src.shape is None:
                return False
            opt = bool(src.meta.get("optional"))
            frm = src.meta.get("optional_from", name if name is not None else rep.output(x, i - 1)) if opt else None
            sig.append((src.shape, opt, frm))
        sig = tuple(sig)
        if k in done:
            if done[k] != sig:
                return False
            continue
        for (shape, opt, frm), ph in zip(sig, body.inputs.values()):
            node = body.value(ph)
            node.shape, node.meta = shape, ({"optional": True, "optional_from": frm} if opt else {})
        if not _compact_infer(body, known) or any(body.value(o).shape is None for o in body.outputs.values()):
            return False
        done[k] = sig
    return True


def _all_live(g: IRGraph, sinks: set[str], memo: dict) -> set[str] | None:
    """The placeholders of `g` that `sinks` need, if every node of `g` (every repetition of its compact
    calls included) feeds a sink; None if some node is dead or `g` has a cycle."""
    try:
        order = g.entry_order()
    except CycleError:
        return None
    used, ties = set(sinks), g.ties
    for e in reversed(order):
        if isinstance(e, Repeat):
            outs = frozenset(o for o in e.bodies[e.which[-1]].outputs if e.output(o) in used)
            live_in = _repeat_live(e, outs, memo) if outs else None
            if live_in is None:
                return None
            used.update(e.feeds[x] for x in live_in)
        elif e.name not in used:
            if not e.name.startswith("<"):   # a placeholder may go unread; a node may not
                return None
        else:
            used.update(e.inputs.values())
            if e.name in ties:
                used.add(ties[e.name])
    return {p for p in g.inputs.values() if p in used}


def _repeat_live(rep: Repeat, outs: frozenset, memo: dict) -> set[str] | None:
    """The block inputs whose feeds a compact call reads when `outs` of its last repetition are used; None
    if some node in some repetition is dead."""
    need, fed = outs, set()
    for i in range(rep.count - 1, -1, -1):
        body = rep.bodies[rep.which[i]]
        key = (id(body), need)
        if key not in memo:
            memo[key] = _all_live(body, {body.outputs[o] for o in need}, memo)
        if memo[key] is None:
            return None
        xs = {x for x, p in body.inputs.items() if p in memo[key]}
        fed |= {x for x in xs if i == 0 or x not in rep.carried}
        need = frozenset(x for x in xs if x in rep.carried)
        if i and not need:
            return None   # the repetition before this one would feed nothing
    return fed


def _compact_checks_fine(g: IRGraph, fine: set) -> bool:
    """Every block-input check of `g` and of its compact calls' repetitions passes."""
    for c in g.block_checks:
        if not isinstance(c, Repeat):
            if not _fits(c.patterns, {k: g.value(s).shape for k, s in c.sources.items()}, fine):
                return False
            continue
        for i in range(c.count if c.check is not None else 0):
            prev = c.bodies[c.which[i - 1]] if i else None
            shapes = {x: (prev.value(prev.outputs[x]) if i and x in c.carried else g.value(c.feeds[x])).shape
                      for x in c.check.sources}
            if not _fits(c.check.patterns, shapes, fine):
                return False
        if not all(_compact_checks_fine(c.bodies[k], fine) for k in sorted(set(c.which))):
            return False
    return True


def _fits(patterns: dict, types: dict, fine: set) -> bool:
    shapes = tuple((k, t.shape) for k in patterns if (t := types.get(k)) is not None)
    key = (id(patterns), shapes)
    if key in fine:
        return True
    binding: dict[str, Dim] = {}
    if any(_match(p, types[k].shape, binding) for k, p in patterns.items() if types.get(k) is not None):
        return False
    fine.add(key)
    return True


def _width_hint(ir: IRGraph, n, e: ShapeError) -> str | None:
    """GF120's help: the attribute that sets the port's conflicting size, and the value that makes the two
    agree. The nearest node upstream with a dim attribute of that size (`out: d_ff` of `up`), followed
    back through the ops that keep the size on the same axis (norms, activations, residuals)."""
    if e.conflict is None or e.port not in n.inputs:
        return None
    got, want, axis = e.conflict
    if not (isinstance(got, Dim) and got.is_const and isinstance(want, Dim) and want.is_const):
        return None
    src = ir.node(n.inputs[e.port])
    for _ in range(256):   # a chain of size-keeping ops is as long as the graph, at most
        if src.shape is None or src.op == "input":
            return None
        dims = src.shape.shape
        if axis is None:   # expect_dim knows no axis: the last one of that size
            axis = max((i for i, d in enumerate(dims) if d == got), default=None)
        if axis is None or axis >= len(dims) or dims[axis] != got:
            return None
        for attr, text in src.meta.get("dim_text", {}).items():
            if getattr(src.attrs, attr, None) == got.value:
                return _setting(src, attr, text, got.value, want.value)
        src = next((ir.node(s) for s in src.inputs.values() if ir.node(s).shape is not None
                    and ir.node(s).shape.rank == len(dims) and ir.node(s).shape.shape[axis] == got), None)
        if src is None:
            return None
    return None


def _setting(src, attr: str, text, got: int, want: int) -> str:
    where = f"`{attr}` of `{src.short}`"
    refs = src.meta.get("param_refs", {}).get(attr, [])
    if isinstance(text, str) and refs == [text.strip()]:
        return f"set `{refs[0]}` to {want} (it is {where}, now {got}), or change the other side"
    if isinstance(text, int):
        return f"set {where} to {want} (now {got}), or change the other side"
    return f"make {where} (`{text}` = {got}) equal {want}, or change the other side"


def _apply_rule(ir: IRGraph, n, ins, ties: dict):
    """The op's shape rule; a size past the dimension algebra's bound (10^18) is a spec error too."""
    try:
        shape = REGISTRY[n.op].shape(n.attrs, ins)
        _check_tied(ir, n, ins, ties)
        return shape
    except DimError as e:
        raise ShapeError("GF150", f"a size is out of range: {e.message}") from None


_TIE_HELP = {
    "linear": "a tied output layer needs `out` = the embedding's vocab and input width = its dim",
    "embedding": "a shared table needs the same `vocab` and `dim` as its owner",
}


def _check_tied(ir: IRGraph, n, ins, ties: dict) -> None:
    """`tied: other` reuses `other.weight`: the two weight shapes must agree."""
    target = ties.get(n.name)
    if not target:
        return
    t = ir.value(target)
    if t.name == n.name:
        raise ShapeError("GF125", f"`tied: {t.short}` names this node itself", attr="tied")
    if t.op == "input":
        raise ShapeError("GF125", f"`tied: {t.short}` names a graph input; it must name a node with a `weight` "
                         "(an embedding)")
    if t.shape is None or t.attrs is None:
        return
    owner = ties.get(t.name)
    if owner:
        raise ShapeError("GF125", f"`{t.short}` has no table of its own: it is tied to `{ir.value(owner).short}`",
                         help=f"write `tied: {ir.value(owner).short}`", attr="tied")
    theirs = REGISTRY[t.op].params(t.attrs, {p: ir.value(s).shape for p, s in t.inputs.items()}).get("weight")
    if theirs is None:
        raise ShapeError("GF125", f"`tied: {t.short}` needs a node with a `weight`; `{t.short}` ({t.op}) has none")
    # the weight this node would own without the tie
    mine = tuple(REGISTRY[n.op].params(n.attrs.model_copy(update={n.attrs.tie_field: None}), ins)["weight"])
    if tuple(theirs) != mine:
        raise ShapeError("GF125", f"tied weight of `{t.short}` is {list(theirs)} but this node needs {list(mine)}",
                         help=_TIE_HELP.get(n.op))


def _dedupe_repeats(diags: list[Diagnostic]) -> list[Diagnostic]:
    """The same error in every repetition of a block is one error (with a note), not N."""
    seen: dict[tuple, Diagnostic] = {}
    out = []
    for d in diags:
        key = (d.code, d.span, d.message)
        if key in seen:
            continue
        seen[key] = d
        out.append(d)
    return out


def check_block_inputs(ir: IRGraph, checks: list[BlockInputCheck] | None = None) -> list[Diagnostic]:
    """Block inputs declare shapes; bare symbols in them bind per call (`n` may be `t` at one call)."""
    if checks is None and ir.compact:
        if _compact_checks_fine(ir, set()):
            return []
        ir.unroll()
    diags = []
    fine: set = set()   # (patterns, actual shapes) already seen to match: every repetition is one check
    for e in ir.block_checks if checks is None else checks:
        shapes = tuple((k, s.shape) for k in e.patterns
                       if (src := e.sources.get(k)) and (s := ir.node(src).shape) is not None)
        key = (id(e.patterns), shapes)
        if key in fine:
            continue
        binding: dict[str, Dim] = {}
        problem = None
        for k, pattern in e.patterns.items():
            src = e.sources.get(k)
            actual = ir.node(src).shape if src else None
            if actual is None:
                continue
            problem = _match(pattern, actual.shape, binding)
            if problem:
                prod = ir.node(src)
                diags.append(Diagnostic(
                    "GF126", f"input `{k}` of block `{e.block}` expects [{', '.join(map(str, pattern))}], "
                    f"got {actual}: {problem}", e.call_span, node=src,
                    labels=[l for l in [Label(e.spans[k], "declared here") if e.spans.get(k) else None,
                                        Label(prod.span, f"`{prod.short}` produces {actual}") if prod.span else None] if l],
                    notes=[f"`repeat` feeds the block's output `{k}` back in as its input `{k}` (here in repetition "
                           f"{e.index}), so the block must keep that shape"] if e.index and k in e.carried else []))
                break
        if problem is None:
            fine.add(key)
    return _dedupe_repeats(diags)


def _match(pattern, actual, binding: dict[str, Dim]) -> str | None:
    if len(pattern) != len(actual):
        return f"rank {len(actual)} instead of {len(pattern)}"
    for i, (p, a) in enumerate(zip(pattern, actual)):
        syms = p.symbols
        if len(syms) == 1 and p == Dim.sym(next(iter(syms))):
            name = next(iter(syms))
            if name in binding and binding[name] != a:
                return f"dimension {i} is `{a}` but `{name}` is already `{binding[name]}`"
            binding[name] = a
        elif not syms - set(binding):
            try:
                want = p.subs(binding)
            except DimError as e:  # e.g. `n // m` with `m` bound to 0
                return f"dimension {i}: {e.message}"
            if want != a:
                return f"dimension {i} is `{a}`, expected `{want}`"
    return None


def at_dims(ir: IRGraph, dims: dict[str, int]) -> IRGraph:
    """A copy of `ir` with its symbols bound to `dims` wherever they occur: the inputs' shapes and the
    symbolic attributes (a reshape's target), ready to be inferred again at those sizes (`build --dims`)."""
    ir = copy.deepcopy(ir)
    for node in ir.nodes():
        if node.op == "input" and node.shape is not None:
            node.shape = type(node.shape)(tuple(d.subs(dims) for d in node.shape.shape), node.shape.dtype)
        for f in getattr(node.attrs, "shape_fields", ()):
            if getattr(node.attrs, f) is None:   # an optional one left out (interpolate's `size`)
                continue
            bound = (v if isinstance(v, int) else _bound(parse(v).subs(dims)) for v in getattr(node.attrs, f))
            node.attrs = node.attrs.model_copy(update={f: tuple(bound)})
    return ir


def _bound(d: Dim) -> int | str:
    return d.value if d.is_const else str(d)
