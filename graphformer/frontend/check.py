"""The front end in one call: file → Program → IR → inferred shapes, with every diagnostic collected."""
from __future__ import annotations

from dataclasses import dataclass, field

from .bundled import resolve
from ..base.diagnostics import Diagnostic, SpecError
from .expand import expand
from .infer import check_block_inputs, infer, lint
from ..base.dims import Dim
from ..ir import BodyFacts, IRGraph, Repeat
from ..ops import REGISTRY
from ..ops.base import TensorType
from ..analysis.summary import param_shapes, rows
from .load import load_program
from ..weights.maps import stored_shape_problems


@dataclass
class CheckResult:
    ir: IRGraph | None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ir is not None and not any(d.is_error for d in self.diagnostics)


def check_file(path: str, preset: str | None = None, overrides: dict[str, int] | None = None,
               via: str = "--set", compact: bool = True) -> CheckResult:
    """`path` may name a bundled model. Raises UsageError for unreadable files and bad overrides; everything
    else is a diagnostic. `compact=False` unrolls every repetition before analysing (what the compact
    analyses must equal)."""
    try:
        prog = load_program(resolve(path), preset, overrides, via)
    except SpecError as e:
        return CheckResult(None, e.diagnostics)
    ir, diags = expand(prog, compact)
    diags = _plugin_diagnostics(prog, diags)
    if any(d.code == "GF150" for d in diags):
        return CheckResult(None, diags)
    ir.connect()
    for body in ir.bodies:
        body.analyse = analyse_body
    diags += lint(ir)
    diags += infer(ir)
    diags += check_block_inputs(ir)
    if not any(d.is_error for d in diags):
        diags += shared_checks(ir)
        diags += [Diagnostic("GF302", f"weight map `{name}`: {why}", rule.span,
                             help="give the reference's stored shape, with the parameter's elements: unit axes "
                                  "added or removed, or the fused tensor's whole shape")
                  for name, rule, why in stored_shape_problems(ir)]
    if any(d.is_error for d in diags):
        # "does not contribute to any output" is usually a consequence of an error upstream of it
        # (and so is a param that nothing reads: the node that would read it may be the broken one)
        diags = [d for d in diags if d.code not in ("GF112", "GF113")]
    return CheckResult(ir, _sorted(diags))


def shared_checks(ir: IRGraph) -> list[Diagnostic]:
    """GF271: a repetition under `share` whose parameters are not its owner's in name and shape (a
    `repeat_index`-driven attribute that sizes a weight). Free where every repetition of a group is one
    compact body (the usual case); otherwise each shared node is compared with its owner."""
    if ir.compact and not _bodies_differ(ir.entries()):
        return []
    out, seen = [], set()
    for name, owner in ir.shared.items():
        node = ir.node(name)
        call = next(f for f in reversed(node.scope) if f.owner is not None)
        if call.path in seen or node.op == "input":
            continue
        mine = _params(ir, node)
        theirs = _params(ir, ir.node(owner)) if owner in ir else None
        if mine is None or mine == theirs or not mine and theirs is None:
            continue
        seen.add(call.path)
        if theirs is None:
            what = f"`{name}` has parameters but repetition {call.owner} has no node `{owner}`"
        else:
            k = next((k for k in {**mine, **theirs} if mine.get(k) != theirs.get(k)))
            shape = lambda d: "absent" if k not in d else "[" + ", ".join(map(str, d[k])) + "]"   # noqa: E731
            what = f"`{name}.{k}` is {shape(mine)} but `{owner}.{k}` is {shape(theirs)}"
        out.append(Diagnostic(
            "GF271", f"repetition {call.index} of `{call.path}` can't use repetition {call.owner}'s parameters: "
            f"{what}", call.call_span,
            help="`share` needs the same parameters in every repetition of a group: make the attribute that "
                 "sizes them the same in each (it may differ between groups), or drop `share`"))
    return out


def _bodies_differ(entries) -> bool:
    """Whether some compact call under `share` runs two different bodies within one group."""
    for e in entries:
        if isinstance(e, Repeat):
            if e.owners is not None and any(e.which[i] != e.which[o] for i, o in enumerate(e.owners)):
                return True
            if any(_bodies_differ(b.entries()) for b in e.bodies):
                return True
    return False


def _params(ir: IRGraph, node) -> dict | None:
    if node.shape is None or any(t is None for t in ir.input_types(node).values()):
        return None
    return {k: tuple(v) for k, v in REGISTRY[node.op].params(node.attrs, ir.input_types(node)).items()}


def _plugin_diagnostics(prog, diags: list[Diagnostic]) -> list[Diagnostic]:
    """GF253 for each package of `requires:` that isn't installed: at the nodes whose op is unknown (it is
    probably theirs), else at the entry; GF257 warnings for installed plugins that were skipped."""
    from ..ops import plugins
    out = [Diagnostic("GF257", p, severity="warning", help="graphformer runs without it; see docs/plugins.md")
           for p in plugins.problems()]
    missing = [(ctx, i, p) for ctx in prog.files for i, p in enumerate(ctx.spec.requires)   # imported files' too
               if plugins.installed(p) is None]
    if not missing:
        return out + diags
    packages = list(dict.fromkeys(p for _, _, p in missing))
    names = ", ".join(f"`{p}`" for p in packages)
    fix = "install it (`pip install " + " ".join(packages) + "`), then `graphformer list --ops`"
    unknown = [d for d in diags if d.code == "GF100" and d.message.startswith("unknown op `")]
    for d in unknown:
        op = d.message.split("`")[1]
        out.append(Diagnostic("GF253", f"op `{op}` is not installed: this spec requires {names}, which "
                              f"{'is' if len(packages) == 1 else 'are'} not installed", d.span, node=d.node, help=fix))
    if not unknown:
        out += [Diagnostic("GF253", f"package `{p}` that this spec requires is not installed",
                           ctx.span(("requires", i)), help=fix) for ctx, i, p in missing]
    return out + [d for d in diags if d not in unknown]


def analyse_body(ir: IRGraph, x: TensorType) -> BodyFacts:
    """Infer a block-valued attribute's body at input type `x` (called by op rules through `Body.at`)."""
    for body in ir.bodies:
        body.analyse = analyse_body
    ir.node(next(iter(ir.inputs))).shape = x
    errors = [d for d in infer(ir) if d.is_error]
    if errors:
        return BodyFacts(None, {}, Dim.const(0), (errors[0].code, errors[0].message))
    table = rows(ir)
    return BodyFacts(ir.node(next(iter(ir.outputs.values()))).shape, param_shapes(ir),
                     sum((r.flops for r in table), Dim.const(0)), None)


def _sorted(diags: list[Diagnostic]) -> list[Diagnostic]:
    def key(d: Diagnostic):
        s = d.span
        return (s.file, s.line, s.col) if s else ("", 0, 0)
    return sorted(diags, key=key)
