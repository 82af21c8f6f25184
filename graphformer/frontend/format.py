"""The spec file format as pydantic models: what a YAML file may contain, before any expansion.

Node attributes are op-specific, so `NodeDecl` keeps them as extras; the expander validates them
against the op's (or block's) own attrs model, which forbids unknown fields.
"""
from __future__ import annotations

import keyword
import math
import re
from typing import Any, Literal, Union
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

FORMAT_VERSION = 1

# Names are data that reaches generated Python (locals of the compiled forward), ONNX, DOT, Mermaid and
# HTML: they are ASCII identifiers, so no writer ever has to quote one. Labels (the spec's own name, a
# preset's) are chosen on the command line and shown in titles: `llama2-7b`, `qwen2-0.5b`.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_NAME = 200


def name_problem(name: str) -> str | None:
    """Why `name` can't name a node, block, param, input, output, dim or weight map; None if it can."""
    if not name:
        return "may not be empty"
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long (at most {MAX_NAME})"
    if "." in name:
        return "may not contain `.`: the dot separates path parts (`encoder.3.attn`) and names a block's output"
    if not _IDENTIFIER.fullmatch(name):
        return "is not an identifier: use ASCII letters, digits and `_`, not starting with a digit"
    if keyword.iskeyword(name):
        return "is a Python keyword"
    if name.startswith("__") and name.endswith("__"):
        return "is a reserved `__dunder__` name"
    return None


def label_problem(label: str) -> str | None:
    """Why `label` can't be a spec's or a preset's name (identifiers plus `-` and `.`); None if it can."""
    if not label:
        return "may not be empty"
    if len(label) > MAX_NAME:
        return f"is {len(label)} characters long (at most {MAX_NAME})"
    if not _LABEL.fullmatch(label):
        return "may use ASCII letters, digits, `_`, `-` and `.` only, and must not start with `-` or `.`"
    return None


DimExpr = Union[StrictInt, StrictStr]
# A param's type is the type of its declared default: integers size shapes; floats (eps, rope theta),
# booleans (bias flags, norm placement) and strings (an activation's name) feed attributes.
ScalarParam = Union[StrictBool, StrictInt, StrictFloat, StrictStr]
# A per-layer list (transformers' `layer_types`): one value per repetition of a repeated block call, read
# in the call's attributes as `layer_types[repeat_index]` (expand.py checks its length against the repeat).
ParamValue = Union[ScalarParam, Annotated[list[ScalarParam], Field(min_length=1, max_length=10_000)]]


# Empty defaults from Python functions, not the builtin types: pydantic reads a default factory's signature,
# and a builtin's is parsed from its text by `inspect` (tokenize's regexes, ~5 ms at import).
def _dict() -> dict:
    return {}


def _list() -> list:
    return []


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DerivedParam(_Strict):
    """`d_ff: {expr: 4 * d_model}`: an integer param whose default is computed from other integer params
    (after presets and --set apply), unless it is set itself (GPT-2's n_inner, None = 4 × n_embd)."""

    expr: Union[StrictStr, StrictInt] = Field(description="a dimension expression over integer params")
    doc: str = ""


Shape = list[DimExpr]
Ref = Union[StrictStr, list[StrictStr], dict[str, StrictStr]]


class InputDecl(_Strict):
    shape: Shape
    dtype: Literal["float32", "int64", "bool"] = "float32"
    optional: bool = Field(False, description="may be omitted when the model runs; only optional op inputs "
                                              "(an attention `mask`, rotary `positions`) may read it")
    default: Union[StrictBool, StrictInt, StrictFloat, None] = Field(
        None, description="may be omitted when the model runs; it is then a tensor of this constant, of the declared "
                          "shape (whose symbols the required inputs' shapes must give); any op may read it "
                          "(BERT's `token_type_ids`: 0)")
    doc: str = ""


class NodeDecl(BaseModel):
    """`name: {op: OP, in: ..., repeat: N, share: true, <op attrs>...}`; `in` omitted = the previous node."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    op: StrictStr
    in_: Ref | None = Field(None, alias="in")
    repeat: DimExpr | None = None
    share: Union[StrictBool, DimExpr, None] = Field(
        None, description="on a repeated block call: `true`, every repetition uses the first one's parameters; "
                          "G (an integer or expression), G groups of consecutive repetitions, each sharing its "
                          "first repetition's parameters (ALBERT's num_hidden_groups)")
    when: StrictStr | None = Field(None, description="a boolean param (or `not PARAM`): when false the node is "
                                   "left out, and so are the outputs that name it")
    doc: str = ""

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BlockInputDecl(_Strict):
    """A block input in long form: `mask: {shape: [B, n], optional: true}`."""

    shape: Shape
    optional: bool = Field(False, description="a call may leave it out; then the optional op inputs that read "
                                              "it (an attention `mask` or `bias`) are not fed")
    doc: str = ""


class BlockDecl(_Strict):
    doc: str = ""
    params: dict[str, Union[StrictBool, StrictInt, StrictFloat, StrictStr]] = Field(
        default_factory=_dict, description="block-local params with defaults (an integer or expression, a float, "
                                          "a boolean, or the name of a spec param)")
    inputs: dict[str, Union[Shape, BlockInputDecl]]
    nodes: dict[str, NodeDecl]
    outputs: dict[str, StrictStr]


# The layer index forms of a rule's `from`: `{i}`, arithmetic `{i+K}`, `{i-K}`, `{i*K}`, `{i//K}` (the
# reference's index for the spec's i) and `{i<K}` (an index below K), K an integer or a param name
# (docs/weight-maps.md); `{e}` an expert's index.
_INDEX_FORMS = re.compile(r"\{i(?:(?:\+|-|\*|//|<)(?:\d+|[A-Za-z_]\w*|\([^{}()]{1,100}\)))?\}")


class WeightRule(_Strict):
    """One reference tensor (or a family, with `{i}` for the layer index) → one spec parameter; or, with
    `zero: true` and no `from`, spec parameters the reference doesn't have (a bias it lacks)."""

    src: StrictStr | list[StrictStr] | None = Field(None, alias="from", description="a reference key; a list: "
                                                    "several, concatenated along `concat`")
    concat: int | None = Field(None, ge=0, le=7, description="with a list in `from`: the axis its tensors are "
                                                            "concatenated along (written back split)")
    weight_norm: int | None = Field(None, ge=0, le=7, description="with `from: [G, V]`: one weight built as "
                                    "g · v / ‖v‖, the norm over every axis but this one (torch's weight_norm(dim=AXIS)); "
                                    "written back as g = ‖w‖, v = w")
    multiply: int | None = Field(None, ge=0, le=7, description="with `from: [W, S]`: W times the vector S along "
                                 "this axis (a per-channel scale folded in); written back as W·S and S = 1")
    dst: Union[StrictStr, list[StrictStr]] = Field(alias="to", description="a list splits a fused tensor on dim 0 "
                                                   "(its layout stated by `split`)")
    split: Literal["blocks", "heads", "alternate"] | None = Field(
        None, description="how a fused tensor (a list in `to`) lays out its parts along dim 0: `blocks` = one "
                          "contiguous block per target ([q; k; v], GPT-2); `heads` = interleaved per head "
                          "([heads, targets, head_dim], GPT-NeoX, BLOOM; give `heads`); `alternate` = row r "
                          "belongs to target r mod n (GPT-OSS's interleaved gate/up)")
    heads: DimExpr | None = Field(None, description="with `split: heads`: the number of head groups (an "
                                                    "integer or an expression over params)")
    transpose: bool = Field(False, description="transpose a 2-D tensor first (with `unstack`: each expert's "
                                               "matrix of a 3-D one)")
    unstack: bool = Field(False, description="dim 0 of the tensor indexes experts: slice `e` goes to the "
                                             "targets with `{e}` replaced by e (transformers' fused MoE experts)")
    reshape: bool = Field(False, description="reshape each part to its spec parameter's shape (row-major, the "
                                             "same number of elements)")
    scale: StrictFloat | StrictStr | None = Field(None, description="multiply the tensor by this number (or "
                                                                    "arithmetic over params: `head_dim ** -0.5`), last")
    zero: bool = Field(False, description="without `from`: the reference has no such tensor; the parameters "
                                          "`to` names (`{i}`: every layer) are zeros")
    stored_shape: list[DimExpr] | None = Field(
        None, description="the shape the reference stores `from` in, where the parameter's differs and the rule "
                          "can't say how (unit axes: `[1, 1, d_model]` for a `[1, d_model]` parameter; `reshape: "
                          "true`): what a checkpoint written without a reference gets")

    @model_validator(mode="after")
    def _zero(self):
        if self.zero and self.src is not None:
            raise ValueError("`zero: true` declares parameters the reference lacks: it takes no `from`")
        if not self.zero and self.src is None:
            raise ValueError("a rule reads a reference tensor named by `from`, or sets zeros with `zero: true`")
        if self.zero and (self.transpose or self.unstack or self.reshape or self.scale is not None):
            raise ValueError("`zero: true` has no tensor to transpose, unstack, reshape or scale")
        if isinstance(self.src, list) != any(v is not None for v in (self.concat, self.weight_norm, self.multiply)):
            raise ValueError("a list in `from` and `concat: AXIS` go together (or `weight_norm: AXIS` or "
                             "`multiply: AXIS`, which build one tensor from two)")
        if isinstance(self.src, list) and (len(self.src) < 2 or self.unstack):
            raise ValueError("`from: [...]` concatenates at least 2 tensors (and not with `unstack`)")
        if isinstance(self.scale, float) and not math.isfinite(self.scale):
            raise ValueError(f"`scale` must be a finite number, got {self.scale}")
        return self

    @model_validator(mode="after")
    def _placeholders(self):
        # caught at check time, with a line:col, rather than when weights are loaded
        targets = [self.dst] if isinstance(self.dst, str) else self.dst
        if isinstance(self.dst, list) and len(targets) < 2 and not self.zero:
            raise ValueError("a list in `to` splits a fused tensor: name at least 2 parameters")
        if self.zero:
            for t in targets:
                if "{" in t.replace("{i}", "") or "}" in t.replace("{i}", ""):
                    raise ValueError(f"`{t}`: with `zero: true` the placeholder is `{{i}}` (every layer index)")
            return self
        sources = self.src if isinstance(self.src, list) else [self.src]
        if len({tuple(_INDEX_FORMS.findall(s)) + ("{e}" in s,) for s in sources}) > 1:
            raise ValueError("the keys of `from: [...]` must use the same placeholders")
        for t in [*sources, *targets]:
            rest = (t.replace("{i}", "") if t not in sources else _INDEX_FORMS.sub("", t)).replace("{e}", "")
            if "{" in rest or "}" in rest:
                raise ValueError(f"`{t}`: the placeholders are `{{i}}` (the layer index; in `from` also `{{i+K}}`, "
                                 "`{i-K}`, `{i*K}`, `{i//K}` and `{i<K}`, K an integer, a param or a `(expression)` of params) "
                                 "and `{e}` (the "
                                 "expert: in `from` and every target, or in every target with `unstack`)")
        src = sources[0]
        if len(set(_INDEX_FORMS.findall(src))) > 1:
            raise ValueError(f"`{src}`: every layer index in `from` must be written the same way")
        expert = "{e}" in src   # one tensor per expert (the hub's Mixtral layout)
        if expert and self.unstack:
            raise ValueError("`{e}` in `from` names one expert's tensor; `unstack` reads a tensor of all experts")
        if (self.unstack or expert) != all("{e}" in t for t in targets) or \
                any("{e}" in t for t in targets) != (self.unstack or expert):
            raise ValueError("`{e}` in every target goes with `unstack: true` or with `{e}` in `from`")
        if not _INDEX_FORMS.search(src) and any("{i}" in t for t in targets):
            raise ValueError("`to` uses `{i}` but `from` does not")
        return self


class WeightRename(_Strict):
    """`{from: language_model.model, to: language_model}`: a checkpoint stores under `from` what the rules read
    as `to` (transformers' saved layout against its module's names); checked in expand (GF291, GF292)."""

    src: StrictStr = Field(alias="from", description="dotted segments as a checkpoint stores them (`{i}`: an index)")
    dst: StrictStr = Field(alias="to", description="the same segments as the rules read them (and as written "
                                                  "back: `from`)")


class WeightMap(_Strict):
    doc: str = ""
    reference: StrictStr = Field("", description="what the map is for, e.g. `transformers.BertModel`")
    strip_prefix: Union[StrictStr, list[StrictStr]] = Field(
        "", description="removed from a reference key that starts with it; a list: the longest of them that "
                        "starts the key (one map reading several classes' wrappings: `[dinov2., "
                        "dinov2_with_registers.]`)")
    renames: list[WeightRename] = Field(
        default_factory=_list, description="other names of the same tensors: a key's dotted segments `from` are "
                                          "read as `to`, in order, after `strip_prefix`; weights are written "
                                          "back under `from` (docs/weight-maps.md)")
    ignore: list[StrictStr] = Field(default_factory=_list, description="reference keys (patterns) not used")
    rules: list[WeightRule]


class ImportDecl(_Strict):
    """`{from: llama, blocks: [layer], params: {d_model: text_width, ...}}`: blocks of another spec, with
    the params they read bound from this spec's (closed: nothing else of the other spec leaks in)."""

    src: StrictStr = Field(alias="from", description="a bundled model's name (`llama`), or a spec file's path "
                                                      "relative to this file (`lib/blocks.yaml`)")
    blocks: Union[list[StrictStr], dict[str, StrictStr]] = Field(
        description="the blocks to use: a list of names, or `{local_name: their_name}` to rename")
    params: dict[str, ParamValue] = Field(
        default_factory=_dict, description="every param of the other spec that the imported blocks read: "
                                          "`their_name: value`, the value a param of this spec, an integer "
                                          "expression over them, or a number or boolean")
    doc: str = ""


class SpecFile(_Strict):
    graphformer: Literal[1] = Field(description="format version")
    name: StrictStr
    doc: str = ""
    params: dict[str, Union[ParamValue, DerivedParam]] = Field(
        default_factory=_dict, description="named values with defaults: integers (sizes), floats, booleans or "
                                          "strings, a per-layer list of one of those (read as "
                                          "`name[repeat_index]`), or `{expr: 4 * d_model}` (an integer computed "
                                          "from other params unless set); attributes refer to them by name")
    presets: dict[str, dict[str, ParamValue]] = Field(default_factory=_dict)
    dims: dict[str, StrictInt] = Field(default_factory=_dict, description="example sizes of symbolic dims")
    requires: list[Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")]] = Field(
        default_factory=_list, description="installed packages whose plugin ops this spec uses (docs/plugins.md); "
                                          "a spec never loads code itself: a package not installed is an error "
                                          "(GF253) that names it")
    imports: list[Union[StrictStr, ImportDecl]] = Field(
        default_factory=_list, description="spec files whose blocks (and param defaults) become usable here, "
                                          "or `{from, blocks, params}`: chosen blocks of a bundled model or a "
                                          "file, their params bound from this spec's")
    inputs: dict[str, InputDecl] = Field(default_factory=_dict)
    blocks: dict[str, BlockDecl] = Field(default_factory=_dict)
    nodes: dict[str, NodeDecl] = Field(default_factory=_dict)
    outputs: dict[str, StrictStr] = Field(default_factory=_dict)
    weight_maps: dict[str, WeightMap] = Field(default_factory=_dict)


def block_input_shape(decl: Union[Shape, BlockInputDecl]) -> tuple[Shape, tuple]:
    """A block input's shape, and the YAML path below the input's key to the shape's list."""
    return (decl.shape, ("shape",)) if isinstance(decl, BlockInputDecl) else (decl, ())
