"""The catalogue of diagnostic codes: for each, a title, what it means, how to fix it, and an example of
the mistake. One entry per code, so this file is long by design.

Codes are stable: a code once published keeps its meaning. `graphformer explain GF120` prints an entry
(with the checker's output on its example), and scripts/gen_docs.py renders all of them as
docs/errors.md. tests/unit/test_codes.py checks that every `"GFnnn"` used in the package is registered here,
that every registered code is used, and that each example produces its own code. No imports beyond the
standard library: anything may read this.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

EXAMPLE_FILE = "example.yaml"


@dataclass(frozen=True)
class Code:
    code: str
    title: str
    explanation: str
    fix: str
    example: str | bytes  # the spec file EXAMPLE_FILE, showing the mistake (bytes where it isn't UTF-8)
    files: dict[str, str] = field(default_factory=dict)  # files the example imports, by relative path
    # the command whose refusal the code is, run on the example (`graphformer <command...> example.yaml`);
    # empty: `graphformer check`
    command: tuple[str, ...] = ()
    # a demonstration plugin (graphformer/ops/plugins.py `DEMOS`) installed while the example runs; empty: none
    plugin: str = ""


def lookup(text: str) -> Code | None:
    """The entry for `GF120`, `gf120` or `120`; None if there is none."""
    m = re.fullmatch(r"(?:gf)?(\d{3})", text.strip(), re.IGNORECASE)
    return CODES.get(f"GF{m.group(1)}") if m else None


_ENTRIES = [
    Code(
        "GF001", "invalid YAML",
        "The file is not valid YAML: an unclosed bracket, a bad indent, a tab.",
        fix="Fix the syntax at the position shown; indent with spaces.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm, in: x
outputs: {y: ln}
"""),
    Code(
        "GF002", "duplicate key",
        ("A mapping names the same key twice. Plain YAML keeps the last one silently; graphformer "
         "refuses, because one of the two is almost always a mistake."),
        fix="Delete or rename one of them.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm}
  ln: {op: gelu}
outputs: {y: ln}
"""),
    Code(
        "GF003", "document too large",
        ("The file is over 2 MB, nests more than 64 levels, or expands (through aliases that refer to "
         'aliases: a "billion laughs") to more than 200,000 values. Checked before the work is done, '
         "so a hostile file costs nothing."),
        fix="Split the spec or use fewer nested aliases; real specs are far below these limits.",
        example="""\
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
"""),
    Code(
        "GF004", "unsupported YAML feature",
        ("Tags (`!!python/object`, `!custom`), merge keys (`<<`) and non-scalar keys are refused: a "
         "spec is plain data."),
        fix="Write the values out; use an alias (`*name`) for a whole repeated value.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: !!python/object/apply:os.system ["true"]
"""),
    Code(
        "GF005", "not UTF-8 text",
        "The file has bytes that are not UTF-8, NUL bytes (a binary file) or control characters.",
        fix="Re-save the file as UTF-8 text.",
        example=b'graphformer: 1\nname: caf\xe9\n'),
    Code(
        "GF006", "not one spec document",
        "The file is empty, holds several `---` documents, or is not a mapping at the top level.",
        fix="Put one spec, a `key: value` mapping, in each file.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm}
outputs: {y: ln}
---
name: other
"""),
    Code(
        "GF100", "unknown op",
        ("A node's `op` is neither a primitive op (docs/ops.md) nor a block defined in the file or its"
         " imports. A close match is suggested."),
        fix="Fix the spelling, define the block, or import the file that defines it.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: atention, heads: heads}
outputs: {y: attn}
"""),
    Code(
        "GF101", "unknown field",
        ("A key that the format, the op or the block does not have — usually a typo. A close match is "
         "suggested; otherwise the known fields are listed."),
        fix="Rename the key to the suggested one.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, haeds: heads}
outputs: {y: attn}
"""),
    Code(
        "GF102", "invalid value",
        ("A value of the wrong type or out of range: a boolean that isn't, an unsupported format "
         "version, a non-positive size, an axis out of range, a number that is not finite (`.nan`, `.inf`: "
         "numbers are written into generated code, and these are not numbers there)."),
        fix="Use a value of the type and range the message names.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads, causal: sometimes}
outputs: {y: attn}
"""),
    Code(
        "GF103", "missing field",
        "A required field (a spec's `name`, a linear's `out`, ...) is absent.",
        fix="Add the field.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  up: {op: linear}
outputs: {y: up}
"""),
    Code(
        "GF104", "bad name",
        ("A name is not an identifier. Names of nodes, blocks, params, block params, inputs, outputs, dims "
         "and weight maps are written into generated Python, state-dict keys, ONNX graphs and diagrams as "
         "they are, so they are ASCII letters, digits and `_`, not starting with a digit, not a Python "
         "keyword (`class`, `None`) and not a `__dunder__`. A `.` would also be ambiguous: it separates path "
         "parts (`encoder.3.attn`) and names a block's output (`layers.text`). The spec's own name and "
         "preset names are labels: they may also hold `-` and `.` (`qwen2-0.5b`). A spec with a bad name "
         "is refused whole, before anything is expanded or built."),
        fix="Rename it with `_` in place of other characters (`ln_1`, `x2`, `attn_out`).",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln.1: {op: norm}
  "x²": {op: norm}
outputs: {y: ln.1}
"""),
    Code(
        "GF105", "name taken by an input",
        "A node has the name of an input of the same scope.",
        fix="Rename the node.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  x: {op: norm}
outputs: {y: x}
"""),
    Code(
        "GF106", "wrong inputs",
        ("`in` names a port the op doesn't have, too many or too few inputs, or a required port is "
         "missing."),
        fix="Name the op's ports (docs/ops.md lists them).",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
  mem: {shape: [B, 5, d_model]}
nodes:
  cross: {op: cross_attend, in: {query: x, ctx: mem}, heads: heads}
outputs: {y: cross}
"""),
    Code(
        "GF107", "`repeat` on a primitive op",
        "Only block calls can be repeated.",
        fix="Put the node in a block and repeat the block call.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm, repeat: 3}
outputs: {y: ln}
"""),
    Code(
        "GF110", "unknown name",
        ("`in` or `outputs` refers to a name that no node or input in scope has (or the first node of "
         "a scope has no `in` and there is nothing before it)."),
        fix="Fix the name (a close match is suggested) or add `in:`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm, in: xx}
outputs: {y: ln}
"""),
    Code(
        "GF111", "cycle",
        "Nodes consume each other in a loop; a graph must be acyclic.",
        fix="Make one of them read a value computed before the loop.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  a: {op: linear, in: c, out: d_model}
  b: {op: gelu}
  c: {op: residual, in: [x, b]}
outputs: {y: c}
"""),
    Code(
        "GF112", "unused node (warning)",
        ("A node or input contributes to no output. A warning: the exit code stays 0. Not reported "
         "when there are errors, since it is then usually their consequence."),
        fix="Use it, list it under `outputs`, or delete it.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm}
  extra: {op: linear, in: x, out: 8}
outputs: {y: ln}
"""),
    Code(
        "GF113", "unused param (warning)",
        ("A param is declared but no shape, attribute or `repeat` reads it, so setting it (`--set`, a "
         "preset) would silently change nothing. Not reported when there are errors."),
        fix="Use it (`eps: eps`) or delete it.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, eps: 1.0e-6}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads}
outputs: {y: attn}
"""),
    Code(
        "GF114", "several outputs, none named",
        "A node reads a block call whose block has several outputs without saying which one.",
        fix="Write `in: call.output`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  split:
    inputs: {x: [B, n, d_model]}
    nodes:
      a: {op: norm}
      b: {op: gelu, in: x}
    outputs: {a: a, b: b}
nodes:
  two: {op: split}
  ln: {op: norm, in: two}
outputs: {y: ln}
"""),
    Code(
        "GF115", "no outputs",
        "The spec (or a block) has no `outputs`, so nothing would be computed.",
        fix="Add `outputs: {name: node}`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm}
"""),
    Code(
        "GF120", "dimension mismatch",
        ("Two shapes that must agree differ in one dimension: a residual of different widths, a "
         "concat, a batch, a mask length, a sequence longer than `max_len`."),
        fix="Make the producer's shape match; the label shows which node produced what.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  up:  {op: linear, out: 64}
  sum: {op: residual, in: [x, up]}
outputs: {y: sum}
"""),
    Code(
        "GF121", "rank mismatch",
        "An input has the wrong number of dimensions for the op.",
        fix="Reshape upstream or use an op for that rank.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
  v: {shape: [B, d_model]}
nodes:
  attn: {op: attention, in: v, heads: heads}
outputs: {y: attn}
"""),
    Code(
        "GF122", "dtype mismatch",
        "An input has the wrong dtype, e.g. float features into an embedding.",
        fix="Feed int64 ids to embeddings, bool/int masks to attention, floats elsewhere.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  tok: {op: embedding, in: x, vocab: vocab, dim: d_model}
outputs: {y: tok}
"""),
    Code(
        "GF123", "not divisible",
        ("A size must split evenly and doesn't (width by heads, image by patch). Both numbers are in "
         "the message."),
        fix="Pick sizes that divide.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: 5}
outputs: {y: attn}
"""),
    Code(
        "GF124", "symbolic size where a number is needed",
        ("A weight's shape would depend on a symbolic dimension (e.g. the last dim of an input is "
         "`w`)."),
        fix="Give that dimension a concrete size or a param.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8, w: 16}
inputs:
  x: {shape: [B, n, d_model]}
  v: {shape: [B, n, w]}
nodes:
  up: {op: linear, in: v, out: d_model}
outputs: {y: up}
"""),
    Code(
        "GF125", "tied weight mismatch",
        "`tied: other` reuses another node's weight, but the shapes differ.",
        fix="A tied LM head needs `out` = the embedding's vocab and input width = its dim.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok: {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  head: {op: linear, in: x, out: 64, bias: false, tied: tok}
outputs: {y: head}
"""),
    Code(
        "GF126", "block input shape mismatch",
        ("A block call passes a value whose shape doesn't match the block's declared input; with "
         "`repeat`, a carried output must keep its input's shape."),
        fix="Pass a value of the declared shape, or fix the block.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  layer:
    inputs: {x: [B, n, 64]}
    nodes:
      ln: {op: norm}
    outputs: {x: ln}
nodes:
  stack: {op: layer}
outputs: {y: stack}
"""),
    Code(
        "GF127", "optional input where a value is required",
        ("An input declared `optional: true` may be omitted when the model runs. What is computed from it "
         "is absent with it, so it must end in optional op inputs (an attention's `mask`, rotary "
         "`positions`): an output can't be computed from it."),
        fix="Make the input required, or feed it (or what is computed from it) to an optional port.",
        example="""\
graphformer: 1
name: case
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, 16]}
  y: {shape: [B, n, 16], optional: true}
nodes:
  sum: {op: residual, in: [x, y]}
outputs: {z: sum}
"""),
    Code(
        "GF130", "bad expression",
        ("An expression that graphformer's own small parsers reject. A dimension: syntax errors, `**`, calls, "
         "attribute access, names starting with `__`, inexact `/`, division by zero, literals over "
         "10^15, results over 10^18, more than 200 characters. A real-valued attribute (`scale: d_model ** "
         "-0.5`): anything but numbers, numeric params, `+ - * / // **` and parentheses, or a result that is "
         "not a finite real number. Nothing is ever evaluated by Python."),
        fix="Dimensions: integers, params, `+ - * // / %` and parentheses. Real attributes: add `**`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  up: {op: linear, out: "__import__('os').system('true')"}
outputs: {y: up}
"""),
    Code(
        "GF131", "unknown name in an expression",
        ("An attribute expression names something that is not a param (symbolic dims such as `n` are "
         "only allowed in shapes), or an input shape uses a symbol not declared under `dims:`."),
        fix="Use a param, or declare the symbol.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  up: {op: linear, out: n}
outputs: {y: up}
"""),
    Code(
        "GF132", "non-integer param in a dimension",
        ("A float, boolean or string param is used where a size is needed (`out: 4 * eps`). Only "
         "integer params size tensors."),
        fix="Use an integer param, or give the param an integer default.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, eps: 1e-6}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  up: {op: linear, out: 4 * eps}
outputs: {y: up}
"""),
    Code(
        "GF140", "import cycle",
        "Spec files import each other in a loop.",
        fix="Move the shared blocks into a file that imports neither.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
imports: [lib/cycle-back.yaml]
nodes:
  ln: {op: norm}
outputs: {y: ln}
""",
        files={"lib/cycle-back.yaml": """\
graphformer: 1
name: back
imports: [../example.yaml]
"""}),
    Code(
        "GF141", "block defined twice",
        "Two blocks of the same name, in this file and an import (or two imports).",
        fix="Rename one.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
imports: [lib/blocks.yaml]
blocks:
  ffn:
    inputs: {x: [B, n, d_model]}
    nodes:
      up: {op: linear, out: d_model}
    outputs: {x: up}
nodes:
  f: {op: ffn}
outputs: {y: f}
""",
        files={"lib/blocks.yaml": """\
graphformer: 1
name: blocks
blocks:
  ffn:
    inputs: {x: [B, n, d]}
    nodes:
      ln: {op: norm}
    outputs: {x: ln}
"""}),
    Code(
        "GF142", "import not found",
        "An `imports:` path does not exist (paths are relative to the importing file).",
        fix="Fix the path.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
imports: [lib/nope.yaml]
nodes:
  ln: {op: norm}
outputs: {y: ln}
"""),
    Code(
        "GF143", "imported file has errors",
        "An imported file failed to load; its own errors follow.",
        fix="Fix the imported file.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
imports: [lib/broken.yaml]
nodes:
  ln: {op: norm}
outputs: {y: ln}
""",
        files={"lib/broken.yaml": """\
graphformer: 1
name: broken
blocks:
  ffn:
    inputs: {x: [B, n, d]}
    nodse:
      up: {op: linear, out: d}
    outputs: {x: up}
"""}),
    Code(
        "GF145", "import outside the spec's directory tree",
        "An import is an absolute path, or leaves the directory of the top-level spec through `..` or a "
        "symbolic link. Imports may only read spec files in that tree, so a spec can't make graphformer read "
        "(and show) other files.",
        fix="Copy the imported spec into the spec's directory tree and import it by a relative path.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
imports: [/etc/passwd]
nodes:
  ln: {op: norm}
outputs: {y: ln}
"""),
    Code(
        "GF146", "import is not a spec",
        "An imported file is not a YAML mapping with a `graphformer:` key. Its content is never shown (only "
        "where the first problem is): it may be any file.",
        fix="Import only spec files; run `graphformer check` on the file itself to see its problem.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
imports: [lib/notes.txt]
nodes:
  ln: {op: norm}
outputs: {y: ln}
""",
        files={"lib/notes.txt": "these are notes, not a spec\n"}),
    Code(
        "GF144", "recursive block",
        "A block calls itself, directly or through other blocks; it would unroll forever.",
        fix="Use `repeat` for stacks of layers.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  layer:
    inputs: {x: [B, n, d_model]}
    nodes:
      ln: {op: norm}
      inner: {op: layer}
    outputs: {x: inner}
nodes:
  stack: {op: layer}
outputs: {y: stack}
"""),
    Code(
        "GF150", "limit exceeded",
        ("A count or size past a limit: `repeat` (10,000; raise with GRAPHFORMER_MAX_REPEAT), expanded"
         " nodes (200,000; GRAPHFORMER_MAX_NODES), params and example sizes (10^12), any size during "
         "inference (10^18)."),
        fix="Lower the size, or raise the limit through the environment variable named.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  layer:
    inputs: {x: [B, n, d_model]}
    nodes:
      ln: {op: norm}
    outputs: {x: ln}
nodes:
  stack: {op: layer, repeat: 1000000}
outputs: {y: stack}
"""),
    Code(
        "GF160", "preset sets an unknown param",
        "A preset overrides a param the spec doesn't declare.",
        fix="Fix the name or declare the param.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
presets:
  tiny: {d_model: 8, haeds: 2}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm}
outputs: {y: ln}
"""),
    Code(
        "GF161", "preset value of the wrong type",
        ("A preset sets a param to a value of another type than the param's default (a string for a "
         "float `eps`). A param's type is the type of its default; an integer is accepted for a float."),
        fix="Write a value of the param's type.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, eps: 1e-5}
presets:
  tiny: {d_model: 8, eps: small}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm, eps: eps}
outputs: {y: ln}
"""),
    Code(
        "GF170", "a transformers config, not a spec",
        ("The file is a Hugging Face `config.json` (it has a `model_type`), which `check` can't read as a "
         "spec. One diagnostic says so instead of one per foreign key."),
        fix="Turn it into a spec: `graphformer import hf config.json -o model.yaml` (docs/huggingface.md).",
        example="""\
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 48, "num_hidden_layers": 2,
 "num_attention_heads": 6, "vocab_size": 97, "transformers_version": "5.24.0"}
"""),
    Code(
        "GF180", "weight-map scale out of range",
        ("A weight-map rule's `scale` multiplies every tensor the rule reads. It must be a finite number "
         "whose magnitude lies between 1e-6 and 1e6: zero would load zeros (and the map's way back, to the "
         "reference's names, divides by it), an infinity or a huge factor loads ±inf or weights that "
         "overflow half precision. Refused at check time, at the "
         "rule's `scale`; at load, a scaled tensor that is no longer finite is refused as well."),
        fix="Write the factor the reference folds in, such as `head_dim ** -0.5`, 2 or -1.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  up: {op: linear, out: d_model}
outputs: {y: up}
weight_maps:
  ref:
    rules:
      - {from: proj.weight, to: up.weight, scale: 1e9}
      - {from: proj.bias, to: up.bias}
"""),
    Code(
        "GF190", "window larger than the grid",
        ("A window op (`window_partition`, `window_merge`, `window_position_bias`) has a window wider or "
         "taller than its grid. A grid the window does not divide is padded, and a grid exactly one "
         "window across is used unshifted, both as transformers' Swin does; a smaller grid is refused, "
         "because there the reference clamps the window but keeps the relative position table of the "
         "larger one, and fails. In Swin this happens at the last stage when the image is too small: "
         "each stage halves the grid."),
        fix="Use a window no larger than the grid's shorter side (the message says how large), or a larger image.",
        example="""\
graphformer: 1
name: case
params: {dim: 16, window: 7}
dims: {B: 2}
inputs:
  x: {shape: [B, 4, 6, dim]}
nodes:
  windows: {op: window_partition, window: window}
outputs: {y: windows}
"""),
    Code(
        "GF210", "no causal attention or recurrence to carry",
        ("`graphformer generate` and `graphformer export --with-past` run a decoder step by step, each step "
         "reading the keys and values of earlier tokens from a cache, or the state a recurrence (Mamba's "
         "`selective_scan`, a causal `conv1d`) carried from them; the spec has neither an `attention` with "
         "`causal: true` nor a recurrence, so there is nothing to carry."),
        fix="Export it without `--with-past` (it does not generate); or, if it is meant to be a decoder, make "
            "its attention causal.",
        command=("export", "--with-past", "-o", "case.onnx"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  ffn:    {op: linear, out: d_model}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF211", "attention a cache cannot serve",
        ("Decoding step by step (`generate`, `export --with-past`) needs every attention the step runs to "
         "be causal self-attention. A bidirectional `attention` lets every position see later ones, so each "
         "new token would change the earlier positions' outputs. `generate` also runs an encoder–decoder: "
         "a `cross_attend` over an encoder's output (which does not depend on the tokens) computes its keys "
         "and values once; one that attends to something the tokens change is refused. A single ONNX step "
         "graph takes neither an encoder's sequence nor a logit `bias` input, which is computed over the "
         "whole sequence, not the step's rows against the cached keys."),
        fix="Export the spec without `--with-past`, or make the attention `causal: true` if that is what "
            "the model means.",
        command=("export", "--with-past", "-o", "case.onnx"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  attn:   {op: attention, heads: heads}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF212", "input a decoder step cannot feed",
        ("A decoder step takes the new token ids (the input an `embedding` reads, which every causal "
         "attention depends on), and optionally an attention padding `mask` and `positions`; `generate` also "
         "feeds an encoder's inputs once per sequence. A spec with no such token input, several, another "
         "input (continuous features, a second sequence), or a node of the step that reads a value computed "
         "once over the encoder's whole sequence other than as a cross-attention's `context`, has no "
         "step-by-step form."),
        fix="Export the spec without `--with-past`; a decoder reads token ids through one `embedding`.",
        command=("export", "--with-past", "-o", "case.onnx"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
  extra:  {shape: [B, n, d_model]}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  both:   {op: residual, in: [tok, extra]}
  attn:   {op: attention, heads: heads, causal: true}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF213", "an op that combines positions",
        ("A decoder step (`generate`, `export --with-past`) runs the model on the new tokens only, which is "
         "exact when every op other than causal attention, position tables and recurrences treats each "
         "position on its own (its `sequence` trait, docs/ops.md). Pooling, slicing or interleaving the "
         "sequence, prepending tokens or latents, a per-position op reading the tokens on another axis "
         "(after a `transpose`), and other ops across the token axis would see only the new tokens. A "
         "recurrence (Mamba's `selective_scan`, a causal `conv1d`) carries a state from step to step "
         "(`graphformer generate`, and `export --with-past` as `past_states` inputs); an encoder–decoder's "
         "decoder steps, whose inputs are past keys and values only, refuse it with this code."),
        fix=("Export the spec without `--with-past`; a spec whose only obstacle is a recurrence generates with "
             "`graphformer generate`."),
        command=("export", "--with-past", "-o", "case.onnx"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  attn:   {op: attention, heads: heads, causal: true}
  pooled: {op: pool, kind: mean}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF215", "no output to sample from",
        ("`graphformer generate` samples each next token from the spec's `logits` output ([B, n, vocab]); "
         "the spec has no output of that name."),
        fix="Name the vocabulary projection's output `logits` (`outputs: {logits: lm_head}`).",
        command=("generate", "--prompt-ids", "1,2", "--max-new-tokens", "2"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  attn:   {op: attention, heads: heads, causal: true}
  head:   {op: linear, out: vocab}
outputs: {scores: head}
"""),
    Code(
        "GF195", "convolution output length not positive",
        ("A `conv1d` reads d·(k − 1) + 1 input frames for each output frame (kernel k, dilation d). "
         "When the input, with its padding, is shorter than that, floor((T + 2p − d·(k − 1) − 1) / s) + 1 "
         "is zero or negative: there would be no output frame. torch raises at run time; graphformer says "
         "so where the conv is written."),
        fix="Feed more frames, pad more, or use a smaller kernel or dilation; the message has the numbers.",
        example="""\
graphformer: 1
name: case
params: {mels: 8, d_model: 16}
dims: {B: 2}
inputs:
  features: {shape: [B, mels, 4]}
nodes:
  conv: {op: conv1d, in: features, out: d_model, kernel: 5, dilation: 2}
outputs: {y: conv}
"""),
    Code(
        "GF200", "a node reads a node that is left out",
        ("A node with `when: PARAM` is left out of the graph while the param is false (a pooler or a head "
         "that a switch turns off). An output that names it is left out too, but a node that reads it has "
         "nothing to read."),
        fix="Give the reader the same `when` (it then goes with the node it reads), or read another node.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, pooler: false}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  first:  {op: pool, kind: cls}
  pooler: {op: linear, out: d_model, when: pooler}
  act:    {op: tanh}
outputs: {pooled: act}
"""),
    Code(
        "GF201", "`when` does not name a boolean param",
        ("`when` switches a node on and off with a boolean param (`when: pooler`, `when: not pooler`) or a "
         "boolean expression over params (`when: layer > 0`). It names no param here, or one that is not a "
         "boolean, or its expression gives a number or a string."),
        fix="Name a boolean param (declare it with a `true` or `false` default), or compare: `when: layer > 0`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, pooler: false}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  first:  {op: pool, kind: cls}
  pooler: {op: linear, out: d_model, when: poler}
outputs: {pooled: pooler}
"""),
    Code(
        "GF220", "soft-cap not positive",
        ("A soft-cap C computes tanh(x / C) · C, which squashes x into (−C, C): Gemma-2 caps its attention "
         "logits at 50 and its final logits at 30. A cap of zero divides by zero and a negative one flips "
         "the sign, so only a finite number greater than 0 is a cap."),
        fix="Give `softcap` (on `attention`) or `cap` (on the `softcap` op) a positive number, or leave the "
            "attribute out for no cap.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads, causal: true, softcap: 0.0}
outputs: {y: attn}
"""),
    Code(
        "GF221", "per-layer list of the wrong length",
        ("A per-layer list param (`windows: [4096, 0, 4096, 0]`, like transformers' `layer_types`) holds one "
         "value per repetition of a repeated block call, which reads it as `windows[repeat_index]`. Here the "
         "list and the repeat count disagree (a preset changed `layers` but not the list), or an index is "
         "out of the list's range."),
        fix="Give the list one entry per repetition (set it in the same preset that sets the repeat count), "
            "or compute the value from `repeat_index` instead: `window: \"4096 if repeat_index % 2 == 0 "
            "else 0\"`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, layers: 3, windows: [4, 0]}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  layer:
    params: {window: 0}
    inputs: {x: [B, n, d_model]}
    nodes:
      attn: {op: attention, heads: 4, causal: true, window: window}
    outputs: {x: attn}
nodes:
  blocks: {op: layer, repeat: layers, window: "windows[repeat_index]"}
outputs: {y: blocks}
"""),
    Code(
        "GF222", "per-layer expression of the wrong type",
        ("A per-layer expression (a block call's attribute or a `when`) computes a value from params and "
         "`repeat_index`: arithmetic on numbers, comparisons, `and` / `or` / `not` on booleans, `a if c "
         "else b` with a boolean condition, and `list[i]` with an integer index on a per-layer list whose "
         "entries share one type. One part of it has a value of another type."),
        fix="Compare a number to get a boolean (`repeat_index % 2 == 0`), or use the operator that fits the "
            "values; the caret points at the part with the wrong type.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, layers: 2}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  layer:
    params: {first: false}
    inputs: {x: [B, n, d_model]}
    nodes:
      ln:   {op: norm, when: not first}
      attn: {op: attention, heads: 4, causal: true}
    outputs: {x: attn}
nodes:
  blocks: {op: layer, repeat: layers, first: "repeat_index and true"}
outputs: {y: blocks}
"""),
    Code(
        "GF202", "params computed from each other",
        ("A param declared `{expr: ...}` takes its default from other params (`d_ff: {expr: 4 * d_model}`), "
         "computed after presets and --set apply. Here the expressions depend on each other in a circle, so "
         "none of them can be computed first."),
        fix="Give one of the params a number, or compute it from params outside the circle.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, d_ff: {expr: 2 * d_inner}, d_inner: {expr: d_ff // 2}}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  up: {op: linear, out: d_ff}
outputs: {y: up}
"""),
    # ---- weight-map split layouts and ALiBi (issue 25/26)
    Code(
        "GF225", "fused split without a layout",
        ("A weight-map rule with a list in `to` splits one fused reference tensor (a query/key/value "
         "projection) into several spec parameters. References lay such tensors out in two ways: one "
         "contiguous block per part ([q; k; v]: GPT-2, torch.nn.MultiheadAttention, ViT) or interleaved per "
         "head ([heads, 3, head_dim]: GPT-NeoX, BLOOM). Both have the same shape, so the wrong one loads "
         "without any error and computes another function (GPT-NeoX's logits are off by about 3). The rule "
         "must say which it is."),
        fix="Add `split: blocks` (contiguous parts) or `split: heads, heads: N` (interleaved per head) to the "
            "rule; the reference's attention code shows which (a `view(..., heads, 3, head_dim)` is `heads`).",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads, causal: true}
outputs: {y: attn}
weight_maps:
  hf:
    rules:
      - {from: qkv.weight, to: [attn.q.weight, attn.k.weight, attn.v.weight]}
      - {from: qkv.bias, split: blocks, to: [attn.q.bias, attn.k.bias, attn.v.bias]}
      - {from: dense.weight, to: attn.o.weight}
      - {from: dense.bias, to: attn.o.bias}
"""),
    Code(
        "GF226", "`split` or `heads` where nothing is split",
        ("`split` states the layout of a fused tensor that a rule splits into the parameters listed in `to`; "
         "a rule with one target (or a `zero` rule) splits nothing. `heads` is the head count of "
         "`split: heads` and means nothing with `split: blocks`."),
        fix="Remove the field, or list the parameters the fused tensor holds.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads, causal: true}
outputs: {y: attn}
weight_maps:
  hf:
    rules:
      - {from: qkv.weight, split: blocks, to: [attn.q.weight, attn.k.weight, attn.v.weight]}
      - {from: qkv.bias, split: blocks, to: [attn.q.bias, attn.k.bias, attn.v.bias]}
      - {from: extra.bias, split: heads, heads: heads, to: attn.o.bias}
      - {from: dense.weight, to: attn.o.weight}
      - {from: dense.bias, to: attn.o.bias}
"""),
    Code(
        "GF227", "`split: heads` without a head count",
        ("`split: heads` reads dim 0 of the fused tensor as [heads, parts, head_dim], so it needs the number "
         "of heads: `heads: N`, a positive integer or an expression over params (`heads: heads`)."),
        fix="Add `heads: heads` (the spec's param) or the number.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads, causal: true}
outputs: {y: attn}
weight_maps:
  hf:
    rules:
      - {from: qkv.weight, split: heads, to: [attn.q.weight, attn.k.weight, attn.v.weight]}
      - {from: qkv.bias, split: heads, heads: heads, to: [attn.q.bias, attn.k.bias, attn.v.bias]}
      - {from: dense.weight, to: attn.o.weight}
      - {from: dense.bias, to: attn.o.bias}
"""),
    Code(
        "GF228", "ALiBi with a sliding window",
        ("`alibi: true` biases each score by the key's position, counted over the real tokens before it "
         "(transformers' BLOOM). A sliding `window` keeps a rolling cache whose slots are not in position "
         "order, so the positions could not be counted in generation; no reference model combines the two."),
        fix="Drop `window`, or use rotary positions (`rope: true`) with the window.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads, causal: true, alibi: true, window: 4}
outputs: {y: attn}
"""),
    Code(
        "GF230", "learned scale of the wrong width",
        ("A `learned_scale` with `per: channel` multiplies each channel of the last dimension by its own "
         "factor, so its stated `dim` must be that dimension; a scalar scale (`per: scalar`, a gate) has no "
         "width to state."),
        fix="Make `dim` the input's last dimension, or leave it out (it defaults to that); for a gate, drop `dim`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ls1: {op: learned_scale, dim: 2 * d_model}
outputs: {y: ls1}
"""),
    Code(
        "GF231", "`clamp` bounds out of order",
        ("`clamp` needs at least one bound, and `min` may not be above `max` (no value would fit). "
         "(A soft-cap, `softcap`, with a cap ≤ 0 is GF220.)"),
        fix="Swap or fix the bounds, or drop a clamp that has none.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  logits: {op: linear, out: vocab}
  capped: {op: clamp, min: 1.0, max: -1.0}
outputs: {y: capped}
"""),
    Code(
        "GF232", "tokens that are not the image's patch grid",
        ("`grid_positions` resizes its learned grid of positions to the patch grid of `image`, "
         "(H // patch) × (W // patch), and adds it to the tokens after the `prefix` leading ones. The tokens "
         "must be exactly those: `prefix` + (H // patch)(W // patch) of them. A different patch size, a "
         "patch_embed with a stride, or tokens added in between give another count, and the positions "
         "would land on the wrong patches; an image smaller than one patch has no grid at all."),
        fix="Feed the tokens of this image's patch_embed (same `patch`, no stride) with the `prefix` tokens "
            "prepended, and add other tokens (registers) after the positions.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, image: 28, patch: 7}
dims: {B: 2}
inputs:
  pixels: {shape: [B, 3, image, image]}
nodes:
  patches: {op: patch_embed, in: pixels, patch: patch, dim: d_model}
  cls:     {op: prepend_tokens, count: 2}
  pos:     {op: grid_positions, in: {x: cls, image: pixels}, table: 4, patch: patch}
outputs: {y: pos}
"""),
    Code(
        "GF233", "an antialiased resize below ONNX opset 18",
        ("`grid_positions` with `antialias: true` resizes as torch's antialiased interpolate does "
         "(transformers' Dinov2WithRegisters). ONNX's Resize has antialiasing from opset 18; at an older "
         "opset the export would compute other positions than torch, so it is refused."),
        fix="Export with `--opset 18` (or later).",
        command=("export", "-o", "case.onnx"),
        example="""\
graphformer: 1
name: case
params: {d_model: 16, patch: 4}
dims: {B: 2}
inputs:
  pixels: {shape: [B, 3, 20, 12]}
nodes:
  patches: {op: patch_embed, in: pixels, patch: patch, dim: d_model}
  cls:     {op: prepend_tokens, count: 1}
  pos:     {op: grid_positions, in: {x: cls, image: pixels}, table: 4, patch: patch, antialias: true}
outputs: {y: pos}
"""),
    Code(
        "GF235", "unknown bundled model in an import",
        ("An import's `from:` names a bundled model (a bare name, no `.yaml` and no `/`) that graphformer does not "
         "ship. Bundled names resolve only to the package's own specs directory, never to a file elsewhere."),
        fix="Use a name `graphformer list` shows, or write a file of yours as a path ending in `.yaml`.",
        example="""\
graphformer: 1
name: case
params: {d: 32, h: 4, ff: 64, eps: 1.0e-5, act: quick_gelu}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d]}
imports:
  - from: clip-vit-b23
    blocks: [vision_layer]
    params: {vision_width: d, vision_heads: h, vision_ff: ff, vision_eps: eps, vision_act: act, vision_attn_dropout: 0.0}
nodes:
  y: {op: vision_layer, in: x}
outputs: {y: y}
"""),
    Code(
        "GF236", "imported block not found",
        "An import's `blocks:` names a block the imported spec does not define.",
        fix="Use one of the blocks the message lists (`graphformer check --shapes` on the spec shows its paths).",
        example="""\
graphformer: 1
name: case
params: {d: 32, h: 4, ff: 64, eps: 1.0e-5, act: quick_gelu}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d]}
imports:
  - from: clip-vit-b32
    blocks: [vision_layr]
    params: {vision_width: d, vision_heads: h, vision_ff: ff, vision_eps: eps, vision_act: act, vision_attn_dropout: 0.0}
nodes:
  y: {op: vision_layer, in: x}
outputs: {y: y}
"""),
    Code(
        "GF237", "imported block reads a param the import does not pass",
        ("Imported blocks are closed: every param of the imported spec that they (or the blocks they call) read "
         "must be passed under the import's `params:`, as a param of this spec, an integer expression over them, "
         "or a number or boolean. Nothing falls back silently to the other spec's default."),
        fix="Add the param the message names to the import's `params:`.",
        example="""\
graphformer: 1
name: case
params: {d: 32, h: 4, ff: 64, eps: 1.0e-5, act: quick_gelu}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d]}
imports:
  - from: clip-vit-b32
    blocks: [vision_layer]
    params: {vision_width: d, vision_heads: h, vision_ff: ff, vision_eps: eps, vision_act: act}
nodes:
  y: {op: vision_layer, in: x}
outputs: {y: y}
"""),
    Code(
        "GF238", "import passes an unknown param",
        "An import's `params:` passes a name that is not a param of the imported spec (often a typo).",
        fix="Pass only the imported spec's params (the message suggests the nearest one).",
        example="""\
graphformer: 1
name: case
params: {d: 32, h: 4, ff: 64, eps: 1.0e-5, act: quick_gelu}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d]}
imports:
  - from: clip-vit-b32
    blocks: [vision_layer]
    params: {vision_width: d, vision_heads: h, vision_ff: ff, vision_eps: eps, vision_act: act, vision_attn_dropout: 0.0, vision_witdh: d}
nodes:
  y: {op: vision_layer, in: x}
outputs: {y: y}
"""),
    Code(
        "GF239", "more features than positions",
        ("`scatter_tokens` puts one feature vector at each position its mask marks, so there can be no more "
         "feature vectors than positions in `x`. Where the shapes alone show more (`features [B, 16, d]` into "
         "`x [B, 8, d]`), the check fails here; otherwise the count is checked when the model runs."),
        fix="Make the sequence long enough: one image token per feature vector (LLaVA: (image // patch)² per image).",
        example="""\
graphformer: 1
name: case
params: {d: 32, vocab: 50, image_token: 49}
dims: {B: 2}
inputs:
  tokens: {shape: [B, 8], dtype: int64}
  feats: {shape: [B, 16, d]}
nodes:
  tok: {op: embedding, in: tokens, vocab: vocab, dim: d}
  marks: {op: equal, in: tokens, to: image_token}
  merged: {op: scatter_tokens, in: {x: tok, mask: marks, features: feats}}
outputs: {y: merged}
"""),
    Code(
        "GF240", "latent attention widths that don't fit",
        ("`latent_attention` rotates the `rope_dim` dims of each query head and of the shared rotary key in "
         "interleaved pairs (x₂ᵢ, x₂ᵢ₊₁), as DeepSeek-V2's `apply_rotary_emb` views them as complex numbers; "
         "an odd width leaves one dim without a partner."),
        fix="Make `rope_dim` even (DeepSeek-V2 uses 64).",
        example="""\
graphformer: 1
name: case
params: {d_model: 32}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: latent_attention, heads: 4, kv_rank: 16, nope_dim: 8, rope_dim: 5, v_dim: 8}
outputs: {y: attn}
"""),
    Code(
        "GF241", "experts that don't split into groups",
        ("Group-limited routing (`groups`, DeepSeek-V2's `n_group`) puts the experts in `groups` groups of "
         "equal size and scores each group by its best expert; the experts must divide evenly."),
        fix="Choose `groups` dividing `experts` (DeepSeek-V2: 160 experts in 8 groups), or drop `groups` for "
            "plain top-k routing.",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  ffn:
    inputs: {x: [B, n, d_model]}
    nodes:
      up: {op: linear, out: 32}
      act: {op: silu}
      down: {op: linear, out: d_model}
    outputs: {x: down}
nodes:
  moe: {op: moe, expert: ffn, experts: 6, top_k: 2, groups: 4, top_groups: 2}
outputs: {y: moe}
"""),
    Code(
        "GF242", "more groups kept than there are",
        ("`top_groups` (DeepSeek-V2's `topk_group`) is how many of the `groups` expert groups a token's top-k "
         "may pick from; it cannot be more than there are groups."),
        fix="Set `top_groups` to at most `groups`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  ffn:
    inputs: {x: [B, n, d_model]}
    nodes:
      up: {op: linear, out: 32}
      act: {op: silu}
      down: {op: linear, out: d_model}
    outputs: {x: down}
nodes:
  moe: {op: moe, expert: ffn, experts: 8, top_k: 2, groups: 4, top_groups: 5}
outputs: {y: moe}
"""),
    Code(
        "GF243", "top-k larger than the kept groups",
        ("With group-limited routing a token picks its `top_k` experts among the `top_groups` kept groups, "
         "which hold top_groups · experts / groups experts. A larger `top_k` would pick experts of discarded "
         "groups at weight 0 (their scores are zeroed): transformers does so silently; graphformer refuses."),
        fix="Lower `top_k`, or keep more groups (`top_groups`).",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  ffn:
    inputs: {x: [B, n, d_model]}
    nodes:
      up: {op: linear, out: 32}
      act: {op: silu}
      down: {op: linear, out: d_model}
    outputs: {x: down}
nodes:
  moe: {op: moe, expert: ffn, experts: 8, top_k: 3, groups: 4, top_groups: 1}
outputs: {y: moe}
"""),
    Code(
        "GF244", "a weight-map layer offset that is not an integer param",
        ("In a weight-map rule's `from`, `{i+K}` reads reference layer K + i into spec layer i (the layers of "
         "a second `repeat`) and `{i<K}` only the reference layers below K (the first `repeat`'s). K is an "
         "integer or the name of a non-negative integer param, so the map follows a preset or `--set`."),
        fix="Name an integer param (`{i+dense_layers}`) or write the number (`{i+1}`).",
        example="""\
graphformer: 1
name: case
params: {d_model: 16, first: 1}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  up: {op: linear, out: d_model}
outputs: {y: up}
weight_maps:
  hf:
    rules:
      - {from: "layers.{i+frist}.weight", to: up.weight}
      - {from: "layers.{i+frist}.bias", to: up.bias}
"""),
    Code(
        "GF250", "a defaulted input whose shape the required inputs don't give",
        ("An input with a `default` may be left out of a call; it is then a tensor of that constant with the "
         "input's declared shape, built at run time (in torch, and in an ONNX export that leaves it out). Each "
         "symbol of that shape (`B`, `n`) must therefore be the size of an axis of an input every call gives: "
         "one that is neither `optional` nor defaulted."),
        fix="Write the shape in the required inputs' symbols (`[B, n]` like `input_ids`), or make the input "
            "required (drop `default`).",
        example="""\
graphformer: 1
name: case
params: {vocab: 50, d_model: 16}
dims: {B: 2, n: 8, m: 8}
inputs:
  input_ids:      {shape: [B, n], dtype: int64}
  token_type_ids: {shape: [B, m], dtype: int64, default: 0}
nodes:
  tok: {op: embedding, in: input_ids, vocab: vocab, dim: d_model}
  typ: {op: embedding, in: token_type_ids, vocab: 2, dim: d_model}
outputs: {tokens: tok, types: typ}
"""),
    Code(
        "GF252", "an input's default it can't take",
        ("`default` is the constant a left-out input stands for (BERT's `token_type_ids`: 0), so it is a value of "
         "the input's dtype: an integer for int64, `true` or `false` for bool, a number for float32. An input is "
         "either `optional` (absent when left out: only optional op inputs may read it) or defaulted (a tensor "
         "of its constant: any op may read it), not both."),
        fix="Write a value of the input's dtype, and drop `optional: true` from a defaulted input.",
        example="""\
graphformer: 1
name: case
params: {vocab: 50, d_model: 16}
dims: {B: 2, n: 8}
inputs:
  input_ids:      {shape: [B, n], dtype: int64}
  token_type_ids: {shape: [B, n], dtype: int64, default: 0.5}
nodes:
  tok: {op: embedding, in: input_ids, vocab: vocab, dim: d_model}
  typ: {op: embedding, in: token_type_ids, vocab: 2, dim: d_model}
  sum: {op: residual, in: [tok, typ]}
outputs: {y: sum}
"""),
    Code(
        "GF253", "a required plugin package is not installed",
        ("The spec's `requires:` names a package (a graphformer plugin, docs/plugins.md) that is not installed "
         "in this environment. A spec never loads code itself: only installed packages add ops. Where the spec "
         "uses an op graphformer doesn't know, the error is at that op and names the package expected to "
         "provide it."),
        fix="Install the package (`pip install NAME`) and check `graphformer list --ops`; or remove it from "
            "`requires:` if the spec no longer uses its ops.",
        example="""\
graphformer: 1
name: case
requires: [graphformer-rmsnorm-gated]
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
  z: {shape: [B, n, d_model]}
nodes:
  norm: {op: rmsnorm_gated, in: {x: x, gate: z}}
outputs: {y: norm}
"""),
    Code(
        "GF254", "a plugin op without an ONNX lowering",
        ("`export` writes every node as ONNX operators, and this node's op comes from a plugin that gives no "
         "ONNX lowering. graphformer refuses rather than write a model no runtime can run."),
        fix="Ask the plugin for an ONNX lowering (`Plugin(onnx=...)`), or export with `--custom-ops` to write "
            "the node as an operator of the plugin's own ONNX domain, for a runtime that has it.",
        command=("export", "-o", "case.onnx"), plugin="swish_beta",
        example="""\
graphformer: 1
name: case
requires: [graphformer-demo-plugin]
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  act: {op: swish_beta, beta: 1.5}
outputs: {y: act}
"""),
    Code(
        "GF255", "a plugin op that doesn't say how it treats the token axis",
        ("Generating token by token runs each op on the new positions only; that is right for per-position "
         "ops and wrong for ops that mix positions. This op comes from a plugin that leaves its `sequence` "
         "trait undeclared, so graphformer refuses instead of guessing."),
        fix="Declare `sequence=` on the plugin's OpDef (`POSITION` for an element-wise or per-token op; "
            "docs/plugins.md lists the others).",
        command=("generate", "--prompt-ids", "1,2", "--max-new-tokens", "2"), plugin="swish_beta",
        example="""\
graphformer: 1
name: case
requires: [graphformer-demo-plugin]
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  attn:   {op: attention, heads: heads, causal: true}
  act:    {op: swish_beta, beta: 1.5}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF256", "a plugin op that doesn't say how tensor parallelism splits it",
        ("The tensor-parallel plan (`graphformer.parallelize`, `summary --mesh`) is derived from each op's `tp` "
         "trait. This op comes from a plugin that leaves it undeclared, so graphformer refuses instead of "
         "guessing whether its input may stay split."),
        fix="Declare `tp=` on the plugin's OpDef (`THROUGH` for a weight-free element-wise op, `UNPLANNED` for "
            "one every rank computes whole; docs/plugins.md lists the others).",
        command=("summary", "--mesh", "dp=1,tp=2"), plugin="swish_beta",
        example="""\
graphformer: 1
name: case
requires: [graphformer-demo-plugin]
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  attn:   {op: attention, heads: heads, causal: true}
  act:    {op: swish_beta, beta: 1.5}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF257", "a plugin that could not be loaded",
        ("An installed package registers ops under the `graphformer.ops` entry point, but they could not be "
         "loaded: the package fails to import, its entry point names something that isn't a `Plugin`, an op is "
         "malformed, or an op takes a name already taken (a built-in op or another plugin's). graphformer "
         "skips that plugin's ops and goes on; a spec that uses them reports them as unknown."),
        fix="Fix or reinstall the package named in the warning, or uninstall it; `graphformer list --ops` "
            "shows what is loaded.",
        plugin="broken",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  ln: {op: norm}
outputs: {y: ln}
"""),
    Code(
        "GF245", "a sink count other than the heads",
        ("Attention sinks (GPT-OSS) are one learned logit per query head, `sinks [heads]`, that joins the "
         "head's softmax denominator. `sinks: true` gives one per head; a number of sinks must equal `heads`."),
        fix="Write `sinks: true`, or `sinks: heads`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads, causal: true, sinks: 8}
outputs: {y: attn}
"""),
    Code(
        "GF258", "a weight-map layer index whose K is out of range",
        ("A rule's `from` may compute the reference's layer index from the spec's `i`: `{i+K}`, `{i-K}`, "
         "`{i*K}`, `{i//K}` or `{i<K}`. K is bounded (at most 1,000,000), and a factor or divisor of 0 "
         "(`{i*0}`, `{i//0}`) would send every layer to one reference tensor, or divide by zero."),
        fix="Write K ≥ 1 for `*` and `//` (`{i*2}`: every second reference layer), or use `{i}`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  up: {op: linear, out: d_model}
outputs: {y: up}
weight_maps:
  hf:
    rules:
      - {from: "layers.{i//0}.weight", to: up.weight}
      - {from: "layers.{i//0}.bias", to: up.bias}
"""),
    Code(
        "GF259", "an embedding's padding_idx outside its table",
        ("`padding_idx` names the pad token's row, which is looked up as any other but gets no gradient (as "
         "torch's nn.Embedding(padding_idx=...) and transformers' tables built with pad_token_id). It must be a "
         "row of the table: from 0 to vocab - 1; a negative value means no pad row."),
        fix="Give the pad token's id (below vocab), or a negative value (`pad_token: -1`) for none.",
        example="""\
graphformer: 1
name: case
params: {vocab: 10, d_model: 8, pad_token: 10}
dims: {B: 2, n: 4}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok: {op: embedding, in: tokens, vocab: vocab, dim: d_model, padding_idx: pad_token}
outputs: {y: tok}
"""),
    Code(
        "GF272", "a value head width that is not positive",
        ("`attention`'s `v_head_dim` is the width of one value head where it differs from the query/key heads' "
         "`head_dim`: v is kv_heads·v_head_dim wide and the output projection reads heads·v_head_dim. A width "
         "of 0 or less leaves the values (and the output) empty."),
        fix="Give a positive width, or leave `v_head_dim` out for values as wide as the query/key heads.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, v_dim: 0}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads, v_head_dim: v_dim, causal: true}
outputs: {y: attn}
"""),
    Code(
        "GF273", "interleaved rotary over an odd number of dims",
        ("`rope_interleaved: true` turns the rotary dims of each head in interleaved pairs (x₂ᵢ, x₂ᵢ₊₁), as "
         "GPT-J's and CodeGen's rotate_every_two do; an odd number of rotary dims (`rope_dims`, or the head "
         "width where it is not set) leaves one dim without a partner."),
        fix="Make `rope_dims` even and no wider than the head (GPT-J rotates 64 of each 256-wide head).",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  attn: {op: attention, heads: heads, causal: true, rope: true, rope_interleaved: true, rope_dims: 5}
outputs: {y: attn}
"""),
    Code(
        "GF274", "a tubelet that does not tile the frames",
        ("`patch_embed` with `tubelet: t` cuts a video `[B, C, T, H, W]` into tubelets of t frames (and P×P "
         "pixels), t frames apart, as ViViT's and VideoMAE's Conv3d does. The frame count T must be a multiple "
         "of t, or the last frames would silently fit no tubelet; a video shorter than one tubelet has no "
         "token at all."),
        fix=("Make the frame count a multiple of `tubelet`, or set `remainder: drop` to drop the last frames as "
             "torch.nn.Conv3d does."),
        example="""\
graphformer: 1
name: case
params: {frames: 7, d_model: 32}
dims: {B: 2}
inputs:
  video: {shape: [B, 3, frames, 32, 32]}
nodes:
  tubelets: {op: patch_embed, in: video, tubelet: 2, patch: 16, dim: d_model}
outputs: {y: tubelets}
"""),
    Code(
        "GF275", "an image-only attribute on a tubelet patch embedding",
        ("`grid: true` (patches kept on a `[B, H', W', D]` grid for Swin's window ops) and `remainder: pad` "
         "(zeros at the bottom and right) are defined for images. A `patch_embed` with `tubelet` convolves "
         "over frames too and gives a token sequence `[B, (T/t)·(H/P)·(W/P), D]`; no reference pads a video or "
         "keeps its tubelets on a grid, so the combination is refused rather than guessed."),
        fix="Drop the attribute, or drop `tubelet` for an image `[B, C, H, W]`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32}
dims: {B: 2}
inputs:
  video: {shape: [B, 3, 8, 32, 32]}
nodes:
  tubelets: {op: patch_embed, in: video, tubelet: 2, patch: 16, dim: d_model, grid: true}
outputs: {y: tubelets}
"""),
    Code(
        "GF263", "a reshape that changes the element count",
        ("`reshape` gives its input another shape with the same elements in the same order, so the target's "
         "dims must multiply to the input's. The check is symbolic: `[B, T * N, D]` to `[B * T, N, D]` "
         "holds for every B, T, N; `[B, n, D]` to `[B, 2, D]` does not."),
        fix=("Correct the target (a frame count, a patch count or a width is usually off), or write one axis as "
             "`-1` to infer it."),
        example="""\
graphformer: 1
name: case
params: {frames: 4, patches: 9, d_model: 16}
dims: {B: 2}
inputs:
  x: {shape: [B, frames * patches, d_model]}
nodes:
  per_frame: {op: reshape, shape: [B * frames, patches + 1, d_model]}
outputs: {y: per_frame}
"""),
    Code(
        "GF264", "a reshape axis that can't be inferred",
        ("One axis of a reshape's target may be `-1`: its size is the input's element count divided by the "
         "other axes'. Two `-1`s leave the split ambiguous; a size of 0 or below other than -1 is no size; "
         "and a -1 whose division is not exact (symbolically: `[B, n, 6]` into `[B, -1, 4]`) has no size."),
        fix="Write at most one axis as `-1`, every other one as a positive size that divides the input.",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  split: {op: reshape, shape: [B, -1, -1]}
outputs: {y: split}
"""),
    Code(
        "GF265", "a reshape size that can't be computed at run time",
        ("At run time a backend computes a reshape's target sizes from the symbols they name (B, T, ...), and "
         "it reads each symbol off the shape of the input `x` (an axis that is the symbol, or the symbol times "
         "constants and symbols read before) or of the optional input `like`. One axis may be left to "
         "infer from the element count; a second size whose symbols appear in neither shape (`[B * T, N, D]` "
         "into `[B, T, N, D]`: B and T are merged) can't be computed."),
        fix=("Write that axis as `-1` if no other is, name a tensor whose shape holds the symbol as `like` "
             "(`in: {x: frames, like: video}`: only its shape is read), or make the size a param."),
        example="""\
graphformer: 1
name: case
params: {patches: 9, d_model: 16}
dims: {B: 2, T: 4}
inputs:
  video: {shape: [B, T, patches, d_model]}
nodes:
  frames: {op: reshape, shape: [B * T, patches, d_model]}
  back: {op: reshape, in: frames, shape: [B, T, patches, d_model]}
outputs: {y: back}
"""),
    Code(
        "GF266", "bad axes: an order that is not a permutation, or more than 8 axes",
        ("`permute`'s `order` must name every axis of its input exactly once (output axis i is input axis "
         "order[i]; negative axes count from the end), and `tile`'s `axis` must be an axis of its input. "
         "Tensors have at most 8 axes: a spec input or a reshape target with more is refused."),
        fix="Name each axis 0..rank-1 once in `order`; keep tensors to 8 axes or fewer (merge axes with `reshape`).",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2, T: 4, n: 9}
inputs:
  x: {shape: [B, T, n, d_model]}
nodes:
  swap: {op: permute, order: [0, 2, 2, 3]}
outputs: {y: swap}
"""),
    Code(
        "GF270", "`share` where it can't apply: no `repeat`, or groups that don't divide it",
        ("`share` makes the repetitions of a repeated block call use the parameters of one repetition: "
         "`share: true`, all of them the first one's (ALBERT's one layer applied 12 times); `share: G`, G "
         "groups of consecutive repetitions, repetition i using the first of group i // (repeat / G) "
         "(ALBERT's num_hidden_groups). It needs a call that repeats, and a G from 1 to the `repeat` count "
         "that divides it."),
        fix="Put `share` on the repeated block call (not on a primitive node or a call without `repeat`), "
            "and give a number of groups that divides the `repeat` count, or `true` for one group.",
        example="""\
graphformer: 1
name: case
params: {d_model: 16, layers: 6}
dims: {B: 2, n: 4}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  layer:
    inputs: {x: [B, n, d_model]}
    nodes:
      ff: {op: linear, out: d_model}
      res: {op: residual, in: [x, ff]}
    outputs: {x: res}
nodes:
  encoder: {op: layer, in: x, repeat: layers, share: 4}
outputs: {y: encoder}
"""),
    Code(
        "GF271", "repetitions under `share` whose parameters differ",
        ("Under `share`, a repetition uses the parameters of the first repetition of its group, so both must "
         "have the same parameters, name for name and shape for shape. An attribute driven by "
         "`repeat_index` (or a per-layer list) may differ between the repetitions of a group only where it "
         "sizes no weight (a window, a shift); one that changes a parameter's shape makes sharing impossible."),
        fix="Make the attribute that sizes the parameter the same in every repetition of a group (it may "
            "differ between groups: `share: G`), or drop `share`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 16, layers: 2}
dims: {B: 2, n: 4}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  layer:
    params: {hidden: 32}
    inputs: {x: [B, n, d_model]}
    nodes:
      up: {op: linear, out: hidden}
      down: {op: linear, out: d_model}
      res: {op: residual, in: [x, down]}
    outputs: {x: res}
nodes:
  encoder: {op: layer, in: x, repeat: layers, share: true, hidden: 32 * (repeat_index + 1)}
outputs: {y: encoder}
"""),
    Code(
        "GF267", "channel groups that don't divide the channels",
        ("A grouped `conv1d` or `conv2d` splits its C input channels and its `out` output channels into `groups` "
         "groups, output group g reading input group g only (weight `[out, C / groups, kernel...]`); a `group_norm` "
         "normalises each group of C / groups channels. Either way `groups` must divide the channels, as "
         "torch.nn.Conv1d, Conv2d and GroupNorm require."),
        fix="Pick a `groups` that divides the channels (the message names them), or change the channels.",
        example="""\
graphformer: 1
name: case
params: {d_model: 48}
dims: {B: 2, t: 50}
inputs:
  x: {shape: [B, d_model, t]}
nodes:
  pos_conv: {op: conv1d, in: x, out: d_model, kernel: 8, padding: 4, groups: 5}
outputs: {y: pos_conv}
"""),
    Code(
        "GF268", "a convolution that drops every output frame",
        ("`drop_last: N` removes the last N output frames of a `conv1d` (Wav2Vec2's SamePad: kernel 128 with "
         "padding 64 gives one frame too many). When the input is known to give N frames or fewer, nothing "
         "would be left."),
        fix="Drop fewer frames (1 - kernel % 2 for a same-length output), or feed a longer input.",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2}
inputs:
  x: {shape: [B, d_model, 4]}
nodes:
  conv: {op: conv1d, in: x, out: d_model, kernel: 3, drop_last: 2}
outputs: {y: conv}
"""),
    Code(
        "GF269", "a weight-map rule that builds a tensor from the wrong sources",
        ("`weight_norm: AXIS` builds one parameter from two reference tensors, `from: [G, V]` (g · v / ‖v‖); "
         "`multiply: AXIS` from `from: [W, S]` (W times the vector S along AXIS). Each reads exactly two "
         "tensors into one parameter: not three, not split into several targets or unstacked, and not "
         "together with another way of combining (`concat`)."),
        fix="List the magnitude then the direction (or the tensor then its scale) in `from`, and one parameter "
            "in `to`.",
        example="""\
graphformer: 1
name: case
params: {d: 8}
dims: {B: 2, t: 12}
inputs:
  x: {shape: [B, d, t]}
nodes:
  conv: {op: conv1d, in: x, out: d, kernel: 3, padding: 1}
outputs: {y: conv}
weight_maps:
  hf:
    rules:
      - {from: [conv.weight_g, conv.weight_v, conv.scale], weight_norm: 2, to: conv.weight}
      - {from: conv.bias, to: conv.bias}
"""),
    Code(
        "GF291", "a weight-map rename that can't rename",
        ("A map's `renames` say that a checkpoint stores a run of dotted name segments (`from`) that the rules "
         "read under another name (`to`): transformers' saved files hold LLaVA's text model as "
         "`language_model.model.layers.0...` where the module holds `model.language_model.layers.0...`. Each side "
         "is whole segments (no empty, leading, trailing or doubled dot), the two differ, the only placeholder "
         "is `{i}` (a layer index, on both sides or neither), and one stored name is renamed once."),
        fix="Write `{from: STORED, to: READ}` with dotted names, e.g. `{from: language_model.model, to: "
            "language_model}`; merge two renames of the same `from`.",
        example="""\
graphformer: 1
name: case
params: {d: 8}
dims: {B: 2}
inputs:
  x: {shape: [B, d]}
nodes:
  up: {op: linear, in: x, out: d}
outputs: {y: up}
weight_maps:
  hf:
    renames:
      - {from: "model.{i}", to: model}
    rules:
      - {from: model.up.weight, to: up.weight}
      - {from: model.up.bias, to: up.bias}
"""),
    Code(
        "GF292", "a weight-map rule reading a name the renames take away",
        ("Renames are applied to every key before the rules read it: a key holding a rename's `from` is read "
         "with its `to` instead. A rule whose `from` still holds a rename's `from` (written in the checkpoint's "
         "stored names) then matches no key at all, and loading would report its tensors unused."),
        fix="Write the rule in the names the renames give (their `to`): with `{from: dense, to: up}`, the rule "
            "reads `up.weight`; or drop the rename.",
        example="""\
graphformer: 1
name: case
params: {d: 8}
dims: {B: 2}
inputs:
  x: {shape: [B, d]}
nodes:
  up: {op: linear, in: x, out: d}
outputs: {y: up}
weight_maps:
  hf:
    renames:
      - {from: dense, to: up}
    rules:
      - {from: dense.weight, to: up.weight}
      - {from: up.bias, to: up.bias}
"""),
    Code(
        "GF301", "a weight-map rule a checkpoint writer can't invert",
        ("`build --save-map NAME -o DIR` writes the parameters back under the reference's names, undoing each rule "
         "of map NAME without the reference at hand. Most steps undo themselves (a transpose, a split fused back "
         "by its layout, a scale divided out, renames), but `reshape: true` only says the reference stores the "
         "tensor in another shape with as many elements, not which: the writer would have to guess."),
        fix="Say the shape the reference stores the tensor in with `stored_shape: [...]` (dims over params) on the "
            "rule: `{from: conv.flat, to: conv.weight, reshape: true, stored_shape: [d, d * k]}`.",
        example="""\
graphformer: 1
name: case
params: {d: 4, k: 3}
dims: {B: 2, n: 5}
inputs:
  x: {shape: [B, d, n]}
nodes:
  conv: {op: conv1d, in: x, out: d, kernel: k, bias: false}
outputs: {y: conv}
weight_maps:
  ref:
    rules:
      - {from: conv.flat, to: conv.weight, reshape: true}
""",
        command=("build", "--quiet", "--save-map", "ref", "-o", "out")),
    Code(
        "GF302", "a weight-map `stored_shape` that doesn't fit its rule",
        ("`stored_shape` is the shape the reference stores one tensor in (a checkpoint writer gives the tensor that "
         "shape): it must hold exactly the elements of the parameters the rule makes (all of them, for a fused "
         "tensor), have sizes that are non-negative integers, and belong to a rule that reads one tensor (not a "
         "`zero` rule, not `from: [...]`)."),
        fix="Give the reference's shape: the parameter's with unit axes added or removed (`[1, 1, d_model]` for a "
            "`[1, d_model]` class token), or the fused tensor's whole shape; or remove it from a rule that reads no "
            "single tensor.",
        example="""\
graphformer: 1
name: case
params: {d: 8}
dims: {B: 2, n: 3}
inputs:
  x: {shape: [B, n, d]}
nodes:
  cls: {op: prepend_tokens, in: x, count: 1}
outputs: {y: cls}
weight_maps:
  hf:
    rules:
      - {from: embeddings.cls_token, to: cls.tokens, stored_shape: [1, 2, d]}
"""),
    Code(
        "GF276", "2-D convolution output size not positive",
        ("A `conv2d` reads d·(k − 1) + 1 input pixels along each axis for each output pixel (kernel k, "
         "dilation d). When an image side, with its padding on both ends, is shorter than that, "
         "floor((H + 2p − d·(k − 1) − 1) / s) + 1 is zero or negative: there would be no output row (or "
         "column). torch raises at run time; graphformer says so where the conv is written."),
        fix="Feed a larger image, pad more, or use a smaller kernel or dilation; the message has the numbers.",
        example="""\
graphformer: 1
name: case
params: {channels: 3, width: 16}
dims: {B: 2}
inputs:
  pixels: {shape: [B, channels, 5, 5]}
nodes:
  stem: {op: conv2d, in: pixels, out: width, kernel: 7, stride: 4}
outputs: {y: stem}
"""),
    Code(
        "GF277", "batch statistics over one value per channel",
        ("`batch_norm` normalises each channel by the mean and variance of its values over the batch and "
         "every position while training (and always, with `track_running_stats: false`). When the batch "
         "and the positions are known to hold a single value per channel, the variance is 0 and the "
         "output carries nothing: torch refuses such a batch in training (\"Expected more than 1 value per "
         "channel\")."),
        fix="Normalise a tensor with more than one value per channel (a batch of several, or a grid), or use "
            "`group_norm` or `norm`, whose statistics are per example.",
        example="""\
graphformer: 1
name: case
params: {width: 16}
inputs:
  pooled: {shape: [1, width]}
nodes:
  bn: {op: batch_norm, in: pooled}
outputs: {y: bn}
"""),
    Code(
        "GF278", "an interpolation's target size missing, given twice, or not concrete; align_corners with nearest",
        ("`interpolate` resizes `[B, C, H, W]` to one target size: `size: [height, width]` (numbers or "
         "params, so known before anything runs), `scale: k` (an integer factor of the input's own sides) or "
         "the height and width of the input `like`. None of them, or more than one, leaves the size "
         "undecided; a `size` that names a symbol is only known at run time. `align_corners` places the "
         "corner pixels of bilinear and bicubic interpolation; torch refuses it with mode nearest."),
        fix="Give exactly one of `size`, `scale` or `like` (a symbolic target: `like` a grid of that size, or "
            "`scale`); drop `align_corners` with `mode: nearest`.",
        example="""\
graphformer: 1
name: case
dims: {B: 2}
inputs:
  grid: {shape: [B, 8, 12, 12]}
  first: {shape: [B, 8, 48, 48]}
nodes:
  up: {op: interpolate, in: {x: grid, like: first}, scale: 4, mode: bilinear}
outputs: {y: up}
"""),
    Code(
        "GF290", "a 2-D pooling window torch refuses: padding over half the kernel, or no output",
        ("`pool2d` slides a k × k window over the grid padded by `padding` on every side. torch allows at "
         "most k // 2 of padding (more could make a window of padding only), and needs the padded side to "
         "hold one window at least: H + 2·padding ≥ k, or there is no output row. `count_include_pad` "
         "says how avg pooling divides at the border; max pooling never picks padding, so it has no such "
         "option."),
        fix="Pad at most kernel // 2, feed a grid at least as large as the window, and give `count_include_pad` "
            "to `kind: avg` only.",
        example="""\
graphformer: 1
name: case
dims: {B: 2}
inputs:
  stem: {shape: [B, 16, 56, 56]}
nodes:
  pool: {op: pool2d, in: stem, kind: max, kernel: 3, stride: 2, padding: 2}
outputs: {y: pool}
"""),
    Code(
        "GF295", "`padding: same` on a strided convolution",
        ("`padding: same` pads a `conv2d` so that its output is exactly as large as its input: d·(k − 1) zeros "
         "along each axis, half before and half after (the odd one after). With a stride above 1 the output is "
         "smaller than the input whatever the padding, so torch refuses `same` there, and so does graphformer, "
         "where the conv is written."),
        fix="Use `stride: 1` with `padding: same`, or give the padding as numbers (k // 2 for an odd kernel).",
        example="""\
graphformer: 1
name: case
dims: {B: 2}
inputs:
  image: {shape: [B, 3, 32, 32]}
nodes:
  stem: {op: conv2d, in: image, out: 16, kernel: 3, stride: 2, padding: same}
outputs: {y: stem}
"""),
    Code(
        "GF296", "a transposed convolution's output_padding too large, or no output",
        ("`conv_transpose2d` makes (H − 1)·stride − 2·padding + dilation·(kernel − 1) + output_padding + 1 rows "
         "from H. `output_padding` adds rows at the bottom (and columns at the right) to choose among the input "
         "sizes a strided conv2d maps to one output size; torch requires it to be less than the stride or the "
         "dilation. A `padding` that crops every row the convolution makes leaves no output."),
        fix="Keep `output_padding` below the stride (or the dilation) on each axis, and pad less than the output "
            "the message computes.",
        example="""\
graphformer: 1
name: case
dims: {B: 2}
inputs:
  grid: {shape: [B, 64, 16, 16]}
nodes:
  up: {op: conv_transpose2d, in: grid, out: 32, kernel: 2, stride: 2, output_padding: 2}
outputs: {y: up}
"""),
    Code(
        "GF297", "a 2-D pool with both or neither of `kernel` and `output`, or fixed-window options on an adaptive one",
        ("`pool2d` pools either fixed k × k windows (`kernel`, with `stride`, `padding`, `ceil_mode`, "
         "`count_include_pad`: MaxPool2d / AvgPool2d) or adaptively to a fixed output size (`output: [h, w]`: "
         "AdaptiveMaxPool2d / AdaptiveAvgPool2d, whose windows follow from the input's size). One of `kernel` and "
         "`output` says which; the fixed windows' options mean nothing to an adaptive pool."),
        fix="Give exactly one of `kernel` and `output`; with `output`, drop `stride`, `padding`, `ceil_mode` and "
            "`count_include_pad`.",
        example="""\
graphformer: 1
name: case
dims: {B: 2}
inputs:
  features: {shape: [B, 512, 7, 7]}
nodes:
  pool: {op: pool2d, in: features, kind: avg, output: 1, stride: 2}
outputs: {y: pool}
"""),
    Code(
        "GF298", "adaptive pooling ONNX cannot express",
        ("ONNX has no adaptive pooling. `pool2d` with `output: 1` is exported as GlobalAveragePool or "
         "GlobalMaxPool, at any input size; any other `output` only where the input's height and width are "
         "known at export and divisible by the output's (then every window is H / h × W / w, disjoint: a plain "
         "AveragePool or MaxPool). Elsewhere the windows follow the input's size at run time, and differ in "
         "size from one window to the next, which ONNX's fixed-kernel pools cannot say; the export refuses "
         "rather than compute other values than torch."),
        fix="Export at an image size the output divides (`--set` the image size), or pool to `output: 1`.",
        command=("export", "-o", "case.onnx"),
        example="""\
graphformer: 1
name: case
dims: {B: 2, H: 14, W: 14}
inputs:
  features: {shape: [B, 32, H, W]}
nodes:
  pool: {op: pool2d, in: features, kind: avg, output: [3, 3]}
outputs: {y: pool}
"""),
    Code(
        "GF299", "a grouped norm whose groups don't divide the width, or that isn't an RMS norm",
        ("`norm` with `groups: G` normalises each of G equal slices of the last dimension on its own and then "
         "scales every channel (transformers' MambaRMSNormGated, over n_groups slices of the inner width). "
         "The slices must be equal, so G divides the width; and only `kind: rms` without `unit_offset` has "
         "this form (no reference groups a layer norm this way)."),
        fix="Give `groups` a divisor of the normalised width (Mamba-2: n_groups, which divides "
            "intermediate_size), or drop it from a layer norm.",
        example="""\
graphformer: 1
name: case
params: {inner: 48}
dims: {B: 2, n: 8}
inputs:
  y: {shape: [B, n, inner]}
nodes:
  norm: {op: norm, in: y, kind: rms, groups: 5}
outputs: {y: norm}
"""),
    Code(
        "GF300", "a multi-head scan whose heads don't split the channels, or whose groups don't split the heads",
        ("`selective_scan` with `heads: H` (Mamba-2) scans H heads of D / H channels each, with one decay and "
         "one step size per head, and B and C shared by groups of H / `groups` heads. So H must divide x's "
         "channels, and `groups` must divide H; `groups` without `heads` means nothing, since the "
         "per-channel form (Mamba) shares one B and C among all channels."),
        fix="Set `heads` to Mamba-2's num_heads (intermediate_size = num_heads · head_dim) and `groups` to "
            "n_groups, a divisor of num_heads.",
        example="""\
graphformer: 1
name: case
params: {inner: 48, heads: 6, groups: 4, state: 5}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, inner]}
  dt: {shape: [B, n, heads]}
  bc: {shape: [B, n, 2 * groups * state]}
nodes:
  b:   {op: slice, in: bc, axis: 2, start: 0, stop: groups * state}
  c:   {op: slice, in: bc, axis: 2, start: groups * state}
  ssm: {op: selective_scan, in: {x: x, delta: dt, B: b, C: c}, state: state, heads: heads, groups: groups}
outputs: {y: ssm}
"""),
    Code(
        "GF310", "WKV keys and values of different shapes",
        ("`wkv` (RWKV-4's recurrence) pairs each position's key with its value, channel by channel: its decayed "
         "sums weigh v_t by e^{k_t}, and its parameters `time_decay` and `time_first` are one per channel. So `k` "
         "and `v` must have the same shape [B, L, D]. In RWKV both are attention_hidden_size wide (the `key` and "
         "`value` projections)."),
        fix="Project keys and values to the same width (`out: attn_width` on both), from the same positions.",
        example="""\
graphformer: 1
name: case
params: {d: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d]}
nodes:
  key:   {op: linear, in: x, out: d, bias: false}
  value: {op: linear, in: x, out: d // 2, bias: false}
  wkv:   {op: wkv, in: {k: key, v: value}}
outputs: {y: wkv}
"""),
    Code(
        "GF280", "cross-attentions over different encoder outputs",
        ("`export --with-past` of an encoder–decoder writes optimum's three graphs: the encoder returns "
         "one `last_hidden_state`, and every decoder step takes it as `encoder_hidden_states` "
         "(docs/onnx.md). A decoder whose cross-attentions attend to different values of the encoder (one "
         "layer to an inner layer's output, another to the final norm's) has no such single hand-over."),
        fix="Make every cross-attention attend to the encoder's one output; `graphformer generate` runs "
            "the spec as it is in torch.",
        command=("export", "--with-past", "-o", "out/"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8, t: 5}
inputs:
  source: {shape: [B, n], dtype: int64}
  target: {shape: [B, t], dtype: int64}
nodes:
  src:    {op: embedding, in: source, vocab: vocab, dim: d_model}
  enc:    {op: attention, heads: heads}
  enc_ln: {op: norm}
  tgt:    {op: embedding, in: target, vocab: vocab, dim: d_model}
  self1:  {op: attention, heads: heads, causal: true}
  cross1: {op: cross_attend, in: {query: self1, context: enc}, heads: heads}
  self2:  {op: attention, heads: heads, causal: true}
  cross2: {op: cross_attend, in: {query: self2, context: enc_ln}, heads: heads}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF281", "decoder layers without one self- and one cross-attention each",
        ("optimum carries an encoder–decoder's past per layer: the layer's self-attention keys and values "
         "and its cross-attention's (`past_key_values.{i}.decoder.*`, `past_key_values.{i}.encoder.*`). "
         "`export --with-past` pairs the i-th causal self-attention with the i-th cross-attention, so "
         "their numbers must agree."),
        fix="Give each decoder layer one causal self-attention and one cross-attention; `graphformer "
            "generate` runs the spec as it is in torch.",
        command=("export", "--with-past", "-o", "out/"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8, t: 5}
inputs:
  source: {shape: [B, n], dtype: int64}
  target: {shape: [B, t], dtype: int64}
nodes:
  src:    {op: embedding, in: source, vocab: vocab, dim: d_model}
  enc:    {op: attention, heads: heads}
  tgt:    {op: embedding, in: target, vocab: vocab, dim: d_model}
  self:   {op: attention, heads: heads, causal: true}
  cross1: {op: cross_attend, in: {query: self, context: enc}, heads: heads}
  cross2: {op: cross_attend, in: {query: cross1, context: enc}, heads: heads}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF282", "a cross-attention reading more than the encoder's mask",
        ("optimum feeds an encoder–decoder's decoder the encoder's output and the encoder's padding mask "
         "(`encoder_attention_mask`, the `attention_mask` the encoder was given), nothing else. A "
         "cross-attention with a logit `bias`, or with a mask that is not the encoder's mask input, cannot be "
         "fed."),
        fix="Mask the cross-attentions with the encoder's padding-mask input and drop the bias; "
            "`graphformer generate` runs the spec as it is in torch.",
        command=("export", "--with-past", "-o", "out/"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8, t: 5}
inputs:
  source: {shape: [B, n], dtype: int64}
  target: {shape: [B, t], dtype: int64}
  bias:   {shape: [1, heads, t, n]}
nodes:
  src:    {op: embedding, in: source, vocab: vocab, dim: d_model}
  enc:    {op: attention, heads: heads}
  tgt:    {op: embedding, in: target, vocab: vocab, dim: d_model}
  self:   {op: attention, heads: heads, causal: true}
  cross:  {op: cross_attend, in: {query: self, context: enc, bias: bias}, heads: heads}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF283", "inputs optimum's encoder–decoder classes do not feed",
        ("optimum's ORTModelForSeq2SeqLM feeds the encoder `input_ids` (and `attention_mask`), "
         "ORTModelForSpeechSeq2Seq `input_features`; each decoder step gets `input_ids`, and counts "
         "positions from its past. An encoder reading two inputs besides its padding mask, an encoder "
         "input that is neither token ids nor float features, or a decoder that needs its own mask or "
         "positions input cannot be fed."),
        fix="Give the encoder one input (token ids an `embedding` reads, or float features) plus an "
            "optional padding mask, and make a decoder mask or positions input `optional: true`.",
        command=("export", "--with-past", "-o", "out/"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8, t: 5}
inputs:
  source: {shape: [B, n], dtype: int64}
  target: {shape: [B, t], dtype: int64}
  extra:  {shape: [B, n, d_model]}
nodes:
  src:    {op: embedding, in: source, vocab: vocab, dim: d_model}
  both:   {op: residual, in: [src, extra]}
  enc:    {op: attention, heads: heads}
  tgt:    {op: embedding, in: target, vocab: vocab, dim: d_model}
  self:   {op: attention, heads: heads, causal: true}
  cross:  {op: cross_attend, in: {query: self, context: enc}, heads: heads}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF279", "scan inputs over different sequences",
        ("`selective_scan` reads four tensors that describe the same positions of the same sequences: the "
         "sequence `x [B, L, D]`, the step sizes `delta [B, L, D]` and the state projections `B`, `C [B, L, N]`. "
         "One of them has another batch size or length than `x`: it was computed from another input, or "
         "sliced or reshaped along the wrong axis."),
        fix="Compute delta, B and C from x itself (Mamba: a linear projection of the convolved sequence), "
            "so that all four are [B, L, ·].",
        example="""\
graphformer: 1
name: case
params: {d_model: 16, state: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
  other: {shape: [B, n + 1, d_model]}
nodes:
  dt:  {op: linear, in: other, out: d_model}
  bc:  {op: linear, in: x, out: 2 * state}
  b:   {op: slice, in: bc, axis: 2, start: 0, stop: state}
  c:   {op: slice, in: bc, axis: 2, start: state}
  ssm: {op: selective_scan, in: {x: x, delta: dt, B: b, C: c}, state: state}
outputs: {y: ssm}
"""),
    Code(
        "GF284", "scan step sizes not as wide as the sequence",
        ("`selective_scan`'s `delta [B, L, D]` holds one step size Δ per position and channel of `x [B, L, D]`: "
         "it must be exactly as wide as x. In Mamba, Δ is a low-rank projection (`x_proj`'s first dt_rank "
         "columns) brought back to the inner width by `dt_proj`, then softplus."),
        fix="Give the projection that makes delta `out:` the width of x (Mamba: `dt_proj` with `out: inner`).",
        example="""\
graphformer: 1
name: case
params: {d_model: 16, state: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
  other: {shape: [B, n, d_model]}
nodes:
  dt:  {op: linear, in: x, out: d_model // 2}
  bc:  {op: linear, in: x, out: 2 * state}
  b:   {op: slice, in: bc, axis: 2, start: 0, stop: state}
  c:   {op: slice, in: bc, axis: 2, start: state}
  ssm: {op: selective_scan, in: {x: x, delta: dt, B: b, C: c}, state: state}
outputs: {y: ssm}
"""),
    Code(
        "GF285", "scan state projections not as wide as the state",
        ("`selective_scan` maps each position into an N-wide state per channel with `B [B, L, N]` and out of "
         "it with `C [B, L, N]`, N being its `state` attribute (A_log is [D, N]). B or C has another width. "
         "In Mamba, `x_proj` gives dt_rank + 2·state columns: Δ's, then B's, then C's."),
        fix="Slice B and C `state` wide (`start: dt_rank, stop: dt_rank + state` and `start: dt_rank + state`), "
            "or set `state` to their width.",
        example="""\
graphformer: 1
name: case
params: {d_model: 16, state: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
  other: {shape: [B, n, d_model]}
nodes:
  dt:  {op: linear, in: x, out: d_model}
  bc:  {op: linear, in: x, out: 2 * state}
  b:   {op: slice, in: bc, axis: 2, start: 0, stop: state - 1}
  c:   {op: slice, in: bc, axis: 2, start: state}
  ssm: {op: selective_scan, in: {x: x, delta: dt, B: b, C: c}, state: state}
outputs: {y: ssm}
"""),
    Code(
        "GF293", "a recurrence that cannot run step by step",
        ("A decoder step (`generate`) computes each new position from a state carried from the earlier ones "
         "(its op's `carry` trait). A `conv1d` over the tokens carries its last dilation·(kernel − 1) input "
         "frames only when it is causal: stride 1, `padding` equal to the kernel's reach dilation·(kernel − 1) "
         "and `drop_last` dropping as many frames (so output frame t reads input frames ≤ t); otherwise an "
         "output frame reads later frames, which a step does not have yet."),
        fix=("Make the convolution causal (`padding: kernel - 1, drop_last: kernel - 1`, Mamba's), or export "
             "the spec without `--with-past`: it does not generate token by token."),
        command=("generate", "--prompt-ids", "1,2", "--max-new-tokens", "2"),
        example="""\
graphformer: 1
name: case
params: {d_model: 16, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  chans:  {op: transpose}
  conv:   {op: conv1d, out: d_model, kernel: 3, padding: 1}
  seq:    {op: transpose}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF286", "a relative-position table too short for the span",
        ("`disentangled_attention` reads its relative positions from `rel [rows, d]`: 2 · span rows, span being "
         "`position_buckets` (or `max_relative_positions` without buckets), as transformers' DeBERTa slices "
         "`rel_embeddings[:2 · span]`. A shorter table leaves the farthest buckets without a row to gather."),
        fix=("Make the `relative_embeddings` table `2 * position_buckets` rows (transformers sizes "
             "`rel_embeddings` so); rows past 2 · span are not read."),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  rel:  {op: relative_embeddings, in: x, rows: 8, dim: d_model}
  attn: {op: disentangled_attention, in: {x: x, rel: rel}, heads: heads, position_buckets: 8,
         max_relative_positions: 16}
outputs: {y: attn}
"""),
    Code(
        "GF287", "relative-position buckets that cannot reach their maximum distance",
        ("DeBERTa's log buckets keep distances below `position_buckets // 2` exact and map farther ones to "
         "mid + ceil(log(|r| / mid) / log((max_relative_positions − 1) / mid) · (mid − 1)), mid = "
         "position_buckets // 2. That needs max_relative_positions − 1 > mid (else the logarithm's base is 1 "
         "or less) and at least 4 buckets (else no bucket grows). `max_relative_positions` must be written "
         "out: transformers' -1 stands for `max_position_embeddings`, which the op does not know."),
        fix=("Use more distance than buckets (DeBERTa-v3: 256 buckets, max_relative_positions 512), or "
             "`position_buckets: 0` for plain distances clipped at max_relative_positions."),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  rel:  {op: relative_embeddings, in: x, rows: 16, dim: d_model}
  attn: {op: disentangled_attention, in: {x: x, rel: rel}, heads: heads, position_buckets: 8,
         max_relative_positions: 4}
outputs: {y: attn}
"""),
    Code(
        "GF288", "a prefix on attention that is not causal",
        ("`attention`'s optional `prefix [B, n]` marks a prefix LM's prefix (PaliGemma's image and prompt, "
         "UniLM's source): query i sees key j where j ≤ i, or where both are in the prefix. It widens a causal "
         "mask; an attention without `causal: true` sees every key already, so a prefix there means nothing "
         "and is most likely a missing `causal`."),
        fix="Set `causal: true` on the attention (a prefix LM), or feed nothing to its `prefix` port.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
  prefix: {shape: [B, n], dtype: int64}
nodes:
  attn: {op: attention, in: {x: x, prefix: prefix}, heads: heads}
outputs: {y: attn}
"""),
    Code(
        "GF289", "a required prefix in a decoder step graph",
        ("`export --with-past` writes one graph per step whose inputs are fixed (input_ids, attention_mask, "
         "position_ids, the past keys and values): it has no input for a prefix LM's `prefix`, so its prompt "
         "would attend causally instead of bidirectionally over the prefix. A spec that requires the input "
         "cannot be exported so; one whose `prefix` input is optional exports as the plain causal LM. "
         "`graphformer generate` serves a prefix LM: its prompt is the prefix."),
        fix=("Export without `--with-past`, declare the input `optional: true` (the step graph is then the "
             "causal LM without a prefix), or generate with `graphformer generate`."),
        command=("export", "--with-past", "-o", "case.onnx"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
  prefix: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  attn:   {op: attention, in: {x: tok, prefix: prefix}, heads: heads, causal: true}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
    Code(
        "GF314", "a param no transformers config field carries",
        ("`build --save-map hf -o DIR` writes the config.json of the spec's family (the spec named like a bundled one "
         "that `graphformer import hf` reads) beside the weights, so that `from_pretrained(DIR)` builds this model. "
         "That config says each param through a field of the family's transformers config class; a param set to "
         "something no field says (`--set pooler=false` on BERT: BertConfig has no field that removes the pooler), or "
         "one the family's spec doesn't have, would be silently built otherwise by from_pretrained."),
        fix="Drop the `--set` (or the param) that the config can't say, or write the weights alone under another map "
            "name; the message names the param and the value from_pretrained would use.",
        example="""\
graphformer: 1
name: gpt2
params: {vocab: 50, d_model: 8, scale: 2}
dims: {B: 2, n: 4}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  wte: {op: embedding, vocab: vocab, dim: d_model * scale}
outputs: {hidden: wte}
weight_maps:
  hf:
    rules:
      - {from: transformer.wte.weight, to: wte.weight}
""",
        command=("build", "--quiet", "--save-map", "hf", "-o", "out")),
    Code(
        "GF315", "a param value the family's config fields can't hold",
        ("The config.json `build --save-map hf` writes is checked by importing it back: every param must come back "
         "at its value. A field that exists but can't hold the value (T5's `feed_forward_proj: gated-gelu` always "
         "means the tanh approximation, so a gated exact GELU can't be said) would make from_pretrained build another "
         "function than the spec's."),
        fix="Use a value the field can hold (the message shows what the config reads back as), or drop the `--set`.",
        example="""\
graphformer: 1
name: t5-base
params: {vocab: 50, d_model: 8, ffn: gated_ffn, act: gelu}
dims: {B: 2, n: 4}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  shared: {op: embedding, vocab: vocab, dim: d_model}
  ffn: {op: activation, kind: act, when: ffn == "gated_ffn"}
outputs: {hidden: ffn}
weight_maps:
  hf:
    rules:
      - {from: shared.weight, to: shared.weight}
""",
        command=("build", "--quiet", "--save-map", "hf", "-o", "out")),
    Code(
        "GF316", "params whose config `import hf` refuses",
        ("The config.json `build --save-map hf` writes for the spec's params is one `graphformer import hf` refuses "
         "(the same rules: a combination the family's transformers class builds differently from the spec, such as "
         "DeepSeek-V2 with no mixture-of-experts layer). Writing it would give a checkpoint directory whose model is "
         "not this spec's."),
        fix="Change the params to a combination the family's config describes (the message gives import's reason).",
        example="""\
graphformer: 1
name: deepseek-v2
params: {vocab: 50, d_model: 8, layers: 2, dense_layers: 2}
dims: {B: 2, n: 4}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  embed: {op: embedding, vocab: vocab, dim: d_model * layers // dense_layers}
outputs: {hidden: embed}
weight_maps:
  hf:
    rules:
      - {from: model.embed_tokens.weight, to: embed.weight}
""",
        command=("build", "--quiet", "--save-map", "hf", "-o", "out")),
    Code(
        "GF317", "a convolution's `padding_mode` that can't take its padding from the input",
        ("`padding_mode: reflect` pads a `conv1d` or `conv2d` with the pixels beyond the edge mirrored (the edge "
         "itself not repeated), so along each axis the padding must be less than the input's side; "
         "`circular` pads with the other end's pixels, wrapping once, so the padding may be at most the side. "
         "torch refuses both otherwise at run time; graphformer says so where the side is known. `zeros` and "
         "`replicate` take any padding."),
        fix="Pad less than the side (reflect) or at most the side (circular), feed a larger input, or pad with "
            "`zeros` or `replicate`.",
        example="""\
graphformer: 1
name: case
dims: {B: 2}
inputs:
  image: {shape: [B, 3, 2, 2]}
nodes:
  conv: {op: conv2d, in: image, out: 8, kernel: 5, padding: 2, padding_mode: reflect}
outputs: {y: conv}
"""),
    Code(
        "GF318", "`weight_norm` on a tied linear",
        ("`weight_norm: AXIS` stores a `linear`'s weight as a magnitude `weight_g` and a direction `weight_v` of "
         "its own (w = g · v / ‖v‖). A linear `tied` to an embedding has no weight of its own: it reads the "
         "table, so there is nothing to store in two parts."),
        fix="Drop `weight_norm`, or untie the layer (`tie: false`) so that it holds weight_g and weight_v.",
        example="""\
graphformer: 1
name: case
params: {vocab: 50, d: 16}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d}
  logits: {op: linear, out: vocab, tied: tok, weight_norm: 0}
outputs: {logits: logits}
"""),
    Code(
        "GF324", "`qk_unit_offset` with per-head LayerNorms on q and k",
        ("`qk_unit_offset` makes the RMS q/k norms scale by 1 + weight (Gemma-3, weights stored around 0). "
         "`qk_norm: layer_heads` is a LayerNorm per head whose scale is the weight itself (Cohere), so the two "
         "together describe no reference model."),
        fix="Drop `qk_unit_offset`, or use `qk_norm: rms` where the model's q/k norms are Gemma-style RMS norms.",
        example="""\
graphformer: 1
name: case
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, 32]}
nodes:
  attn: {op: attention, in: x, heads: 4, qk_norm: layer_heads, qk_unit_offset: true}
outputs: {y: attn}
"""),
    Code(
        "GF320", "a selection bias on a router without per-expert scores",
        ("`selection_bias: true` (DeepSeek-V3's `e_score_correction_bias`) adds a per-expert bias to the "
         "router's scores to choose the top-k experts, then weighs the chosen ones by their unbiased scores. "
         "`router: topk_softmax` has no score per expert before its top-k (it takes the top-k logits, then a "
         "softmax over those), so there is nothing to bias."),
        fix="Use `router: sigmoid_topk` (DeepSeek-V3) or `softmax_topk`, or drop `selection_bias`.",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  ffn:
    inputs: {x: [B, n, d_model]}
    nodes:
      up: {op: linear, out: 32}
      act: {op: silu}
      down: {op: linear, out: d_model}
    outputs: {x: down}
nodes:
  moe: {op: moe, expert: ffn, experts: 8, top_k: 2, router: topk_softmax, selection_bias: true}
outputs: {y: moe}
"""),
    Code(
        "GF321", "groups ranked by their best two experts with fewer than two per group",
        ("`group_score: top2_sum` (DeepSeek-V3) ranks each expert group by the sum of its two best scores, "
         "so every group must hold at least two experts: experts / groups ≥ 2."),
        fix="Use fewer groups, or `group_score: max` (a group ranked by its best expert, as DeepSeek-V2).",
        example="""\
graphformer: 1
name: case
params: {d_model: 16}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
blocks:
  ffn:
    inputs: {x: [B, n, d_model]}
    nodes:
      up: {op: linear, out: 32}
      act: {op: silu}
      down: {op: linear, out: d_model}
    outputs: {x: down}
nodes:
  moe: {op: moe, expert: ffn, experts: 4, top_k: 2, router: sigmoid_topk, groups: 4, top_groups: 2,
        group_score: top2_sum}
outputs: {y: moe}
"""),
    Code(
        "GF322", "bidirectional `blocks` on attention that is not causal",
        ("`attention`'s optional `blocks [B, n]` marks bidirectional blocks inside a causal mask: each run of "
         "consecutive equal non-zero values is one block whose positions see each other both ways (Gemma-3's "
         "images, transformers' `token_type_ids == 1`). It widens a causal mask; an attention without "
         "`causal: true` sees every key already, so blocks there mean nothing and are most likely a missing "
         "`causal`."),
        fix="Set `causal: true` on the attention, or feed nothing to its `blocks` port.",
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
  blocks: {shape: [B, n], dtype: int64}
nodes:
  attn: {op: attention, in: {x: x, blocks: blocks}, heads: heads}
outputs: {y: attn}
"""),
    Code(
        "GF323", "a required `blocks` input in a decoder",
        ("Decoding runs the prompt, then one step per new token, feeding only the token ids, a padding mask and "
         "positions (`graphformer generate`, and the graph `export --with-past` writes). A spec input read as "
         "attention's `blocks` has no values there, so the prompt's blocks would be lost. Blocks computed in the "
         "graph from the tokens need no input: `equal` on the image token, as specs/gemma3-vision.yaml does, "
         "gives every call its own (a step's cached keys are in no block)."),
        fix=("Compute the blocks from the tokens in the graph (`{op: equal, in: tokens, to: image_token}`), or "
             "declare the input `optional: true` (decoding then leaves it out and the prompt attends causally)."),
        command=("export", "--with-past", "-o", "case.onnx"),
        example="""\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
  blocks: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  attn:   {op: attention, in: {x: tok, blocks: blocks}, heads: heads, causal: true}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""),
]

CODES: dict[str, Code] = {c.code: c for c in _ENTRIES}
