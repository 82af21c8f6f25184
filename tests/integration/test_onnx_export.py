"""ONNX export: every bundled spec at `tiny` passes ONNX's full checker, ONNX's own shape inference
agrees with graphformer's on every IR value, and ONNX Runtime reproduces the torch build at two sizes of
every symbolic dim. Plus: names, opsets, weight sources, external data, and the CLI's exit codes.

Specs are globbed, so a spec added later is covered without touching this file.
"""
from __future__ import annotations

import copy
import glob
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import graphformer as gf  # noqa: E402
from graphformer.backends.onnx import ExportError, LOWERINGS, export_onnx, to_onnx  # noqa: E402
from graphformer.frontend.infer import at_dims, infer  # noqa: E402
from graphformer.ops import REGISTRY  # noqa: E402
from graphformer.analysis.summary import param_shapes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))
RTOL = 1e-5


def _id(path: str) -> str:
    return os.path.basename(path)[:-5]


# ---------------------------------------------------------------- fixtures

class Case:
    """One spec at tiny: its torch build (weights perturbed so no bias is 0 and no scale 1), its export with
    every input, optional ones included (the default export, without them: test_optional_inputs_...)."""

    def __init__(self, path: str, preset: str | None = "tiny"):
        self.spec = gf.load(path, preset)
        missing = sorted({n.op for n in self.spec.ir.nodes() if n.op != "input" and n.op not in LOWERINGS})
        if missing:
            pytest.skip(f"no ONNX lowering yet for {', '.join(missing)} (see test_every_op_has_an_onnx_lowering)")
        self.module = gf.build(self.spec, seed=0).eval()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():  # the seeded init has zero biases and unit norm scales: they would hide bugs
            for p in self.module.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        self.model = to_onnx(self.spec, self.module, inputs=list(self.spec.inputs))


_CASES: dict[str, Case] = {}


@pytest.fixture(params=SPECS, ids=_id)
def case(request) -> Case:
    if request.param not in _CASES:
        _CASES[request.param] = Case(request.param)
    return _CASES[request.param]


def _session(model) -> "ort.InferenceSession":
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _second_dims(spec) -> dict[str, int]:
    """Example dims, each moved by the first step that keeps the spec valid (max_len, patch tiling, ...)."""
    dims = dict(spec.dims)
    for name in dims:
        for step in (3, 1, 2, 4, 5, 6, 7, 8, 16, 32, -1):
            trial = {**dims, name: dims[name] + step}
            if trial[name] >= 1 and _holds(spec, trial):
                dims = trial
                break
        else:
            raise AssertionError(f"no second size for dim `{name}` of {spec.name}")
    return dims


def _holds(spec, dims: dict[str, int]) -> bool:
    return not any(d.is_error for d in infer(at_dims(spec.ir, dims)))


# ---------------------------------------------------------------- coverage

@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_every_op_has_an_onnx_lowering(op):
    assert op in LOWERINGS, f"op `{op}` has no ONNX lowering: add one to graphformer/backends/onnx/"


def test_specs_are_found():
    assert len(SPECS) >= 6, SPECS


# ---------------------------------------------------------------- per spec

def test_full_check(case):
    onnx.checker.check_model(case.model, full_check=True)


def test_onnx_shape_inference_agrees(case):
    _check_shape_inference(case)


def _check_shape_inference(case):
    """ONNX's inference (value_info stripped, strict, with data propagation) against graphformer's.

    A dim ONNX infers must equal ours: a value where ours is a constant, dim_param == str(dim) where ours
    is symbolic. ONNX cannot name arithmetic (`n + 1`, `3 * T`), so it may leave a dim unknown — but only
    on a value at or downstream of one whose shape has such a composite dim, or of a Resize to computed sizes.
    """
    model = copy.deepcopy(case.model)
    del model.graph.value_info[:]
    for out in model.graph.output:  # declared output shapes would be merged in: infer those too
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    onnx_shapes = {vi.name: vi.type.tensor_type for vi in
                   list(inferred.graph.value_info) + list(inferred.graph.output)}
    ir = case.spec.ir
    composite = {n.name for n in ir.nodes() if any(not d.is_const and str(d) not in d.symbols for d in n.shape.shape)}
    # ONNX's Resize infers its output only from constant `sizes`; an interpolation to another grid's size
    # (or a given size, with the batch's symbol beside it) computes them from Shape ops
    resized = {n.name for n in ir.nodes() if n.op == "interpolate" and n.attrs.scale is None}
    excused = ir.descendants(composite | resized)
    checked = 0
    outputs_by_node = {n: o for o, n in ir.outputs.items()}
    for node in ir.nodes():
        name = node.name if node.name in onnx_shapes else outputs_by_node.get(node.name)
        if node.op == "input" or name not in onnx_shapes:
            continue
        t = onnx_shapes[name]
        assert t.elem_type == {"float32": 1, "int64": 7, "bool": 9}[node.shape.dtype], name
        dims = t.shape.dim
        assert len(dims) == node.shape.rank, f"{name}: ONNX rank {len(dims)}, ours {node.shape}"
        for i, (od, gd) in enumerate(zip(dims, node.shape.shape)):
            where = f"{name} dim {i}: ONNX {od.dim_value or od.dim_param or '?'} vs ours {gd}"
            if od.HasField("dim_value"):
                assert gd.is_const and gd.value == od.dim_value, where
            elif od.HasField("dim_param") and not od.dim_param.startswith("unk__"):
                assert str(gd) == od.dim_param, where
            else:
                assert node.name in excused, where + " (unknown)"
        checked += 1
    lowered = [n for n in ir.nodes() if n.op != "input"]
    assert checked >= 0.9 * len(lowered), f"only {checked} of {len(lowered)} IR values found in ONNX's inference"


def test_onnx_runtime_matches_torch_at_two_sizes(case):
    spec, sess = case.spec, _session(case.model)
    sizes = [dict(spec.dims), _second_dims(spec)]
    assert not spec.dims or sizes[0] != sizes[1]
    for dims in sizes:
        _check_same_outputs(case, sess, gf.example_inputs(spec, dims=dims, seed=0), f"at {dims}")


def test_optional_inputs_only_when_asked(case):
    """The default export takes the required inputs and the defaulted ones some node reads, no optional one
    (ONNX can't leave a graph input out at run time), and equals the torch build run without the optional
    ones; naming them (`inputs=`) brings them back. `inputs=[]` takes the required inputs alone: a defaulted
    one is then built in the graph (BERT's token_type_ids), equal to the torch build run without it."""
    spec, ir = case.spec, case.spec.ir
    defaulted = [k for k, v in ir.inputs.items() if ir.node(v).meta.get("default") is not None]
    required = [k for k, v in ir.inputs.items() if not ir.node(v).meta.get("optional") and
                (k not in defaulted or ir.consumers(v))]
    if defaulted:
        alone = to_onnx(spec, case.module, inputs=[])
        onnx.checker.check_model(alone, full_check=True)
        bare = [k for k in required if k not in defaulted]
        assert [i.name for i in alone.graph.input] == bare
        inputs = gf.example_inputs(spec, seed=2)
        _check_same_outputs(case, _session(alone), {k: inputs[k] for k in bare}, "without the defaulted inputs")
    if len(required) == len(spec.inputs):
        pytest.skip("no optional inputs")
    model = to_onnx(spec, case.module)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == required
    assert [i.name for i in case.model.graph.input] == list(spec.inputs)
    inputs = gf.example_inputs(spec, seed=2)
    _check_same_outputs(case, _session(model), {k: inputs[k] for k in required}, "with the required inputs alone")
    optional = [k for k in spec.inputs if ir.node(k).meta.get("optional")]
    some = to_onnx(spec, case.module, inputs=optional[:1])   # the defaulted inputs not named: built in the graph
    assert [i.name for i in some.graph.input] == [k for k in spec.inputs if k in required and k not in defaulted
                                                  or k == optional[0]]


def _check_same_outputs(case, sess, inputs: dict, where: str) -> None:
    with torch.no_grad():
        ref = case.module(**inputs)
    got = sess.run(list(case.spec.outputs), {k: v.numpy() for k, v in inputs.items()})
    for name, y in zip(case.spec.outputs, got):
        r = ref[name].numpy()
        assert y.shape == r.shape, f"{name} {where}: {y.shape} vs {r.shape}"
        assert np.isfinite(r).all() == np.isfinite(y).all(), f"{name} {where}: non-finite values differ"
        err, scale = float(np.abs(y - r).max(initial=0)), max(1.0, float(np.abs(r).max(initial=0)))
        assert err <= RTOL * scale, f"{case.spec.name} {name} {where}: max abs err {err:.3g} (scale {scale:.3g})"


# Every op or attribute variant that no bundled spec uses: RMS norm, a layer norm without shift,
# bias-free causal attention with an int padding mask, cross-attention with its own inner and output
# widths and a bool mask, silu, sigmoid, concat, softmax, token_at `first`, pool at index -1, an
# open-ended slice, the cosine_logits variants (scale, bias, both, neither), spectrograms of a waveform of symbolic length, a
# strided, dilated conv1d over them, a grouped weight-normed one and a group norm; a grouped, dilated conv2d
# without bias over an image of symbolic size and a batch norm (eval: running statistics), resized back to the
# image's size (bilinear), enlarged ×3 (nearest) and max- and avg-pooled; a conv2d with a non-square kernel,
# stride, padding and dilation, one with `padding: same` (an even kernel: one more zero after), a grouped
# conv_transpose2d with output padding and global (adaptive 1×1) avg and max pools; Whisper's [sin | cos] sinusoids, computed and stored; T5's
# relative position bias in both directions; a LayerScale and a tanh gate, element-wise constants (offset,
# clamp with one and two bounds, soft-cap), mask tokens from an int mask and tokens inserted after the first.
OP_ZOO = """
graphformer: 1
name: op-zoo
params: {d: 16, heads: 2}
dims: {B: 2, n: 5, m: 7, t: 300, h: 9, w: 7}
inputs:
  x:         {shape: [B, n, d]}
  ctx:       {shape: [B, m, 24]}
  keep:      {shape: [B, m], dtype: bool}
  self_keep: {shape: [B, n], dtype: int64}
  ids:       {shape: [B, n], dtype: int64}
  wave:      {shape: [B, t]}
  feats:     {shape: [B, 2, d]}
  img:       {shape: [B, 4, h, w]}
  wkeep:     {shape: [B, w], dtype: bool}
nodes:
  rms:       {op: norm, in: x, kind: rms, eps: 1.0e-6}
  ln:        {op: norm, in: x, bias: false}
  sa:        {op: attention, in: {x: ln, mask: self_keep}, heads: heads, causal: true, bias: false}
  ca:        {op: cross_attend, in: {query: sa, context: ctx, mask: keep}, heads: heads, dim: 8, out: 12}
  act1:      {op: silu}
  act2:      {op: sigmoid}
  cat:       {op: concat, in: [act2, rms], axis: -1}
  probs:     {op: softmax}
  lin:       {op: linear, out: d, bias: false}
  first:     {op: token_at, in: {x: lin, ids: ids}, select: first, token: 1}
  last:      {op: pool, in: lin, kind: cls, index: -1}
  tail:      {op: slice, in: lin, axis: 1, start: 1}
  cos:       {op: cosine_logits, in: {a: first, b: last}}
  dots:      {op: cosine_logits, in: {a: first, b: last}, normalize: false, scale: none}
  biased:    {op: cosine_logits, in: {a: first, b: last}, scale: none, bias: true}
  sigmoid_l: {op: cosine_logits, in: {a: first, b: last}, bias: true}
  mel:       {op: spectrogram, in: wave, sample_rate: 8000, n_fft: 64, hop: 32, mels: 8}
  mel_raw:   {op: spectrogram, in: wave, sample_rate: 8000, n_fft: 64, win_length: 48, hop: 20, mels: 6,
              center: false, mel_scale: slaney, log: false, f_min: 50.0, f_max: 3000.0}
  rel_bias:  {op: relative_position_bias, in: x, heads: 3, buckets: 6, max_distance: 4}
  rel_causal: {op: relative_position_bias, in: ids, heads: 2, buckets: 5, max_distance: 3, causal: true}
  conv:      {op: conv1d, in: mel, out: 5, kernel: 3, stride: 2, padding: 2, dilation: 2}
  conv_nb:   {op: conv1d, in: mel_raw, out: 4, kernel: 2, bias: false}
  grouped:   {op: conv1d, in: mel_raw, out: 9, kernel: 4, groups: 3, padding: 2, weight_norm: 2, drop_last: 1}
  gnorm:     {op: group_norm, in: grouped, groups: 3}
  halves:    {op: positional, in: x, kind: sinusoidal, sinusoid: halves, max_len: 12}
  stored:    {op: positional, kind: sinusoidal, sinusoid: halves, stored: true, max_len: 12}
  ls:        {op: learned_scale, in: x, init: 0.5}
  gate:      {op: learned_scale, per: scalar, act: tanh, init: 0.3}
  shifted:   {op: offset, by: -0.25}
  clamped:   {op: clamp, min: -0.5, max: 0.75}
  capped:    {op: softcap, cap: 0.6}
  floor0:    {op: clamp, in: x, max: 0.0}
  masked:    {op: mask_tokens, in: {x: x, mask: self_keep}}
  regs:      {op: prepend_tokens, in: masked, count: 2, at: 1}
  marks:     {op: equal, in: ids, to: 3}
  placed:    {op: scatter_tokens, in: {x: x, mask: marks, features: feats}}
  conv2:     {op: conv2d, in: img, out: 6, kernel: 3, stride: 2, padding: 1, dilation: 2, groups: 2, bias: false}
  bn2:       {op: batch_norm, momentum: 0.2}
  up2:       {op: interpolate, in: {x: bn2, like: img}, mode: bilinear}
  near2:     {op: interpolate, in: img, scale: 3}
  pool2:     {op: pool2d, in: near2, kind: max, kernel: 3, stride: 2, padding: 1, ceil_mode: true}
  avg2:      {op: pool2d, in: img, kind: avg, kernel: 2, stride: 1, padding: 1, count_include_pad: false}
  conv_ns:   {op: conv2d, in: img, out: 4, kernel: [3, 2], stride: [2, 1], padding: [1, 0], dilation: [1, 2]}
  same2:     {op: conv2d, in: img, out: 4, kernel: [4, 3], padding: same}
  up_t:      {op: conv_transpose2d, in: same2, out: 6, kernel: [3, 2], stride: [2, 3], padding: 1,
              output_padding: [1, 0], groups: 2}
  gap:       {op: pool2d, in: up_t, kind: avg, output: 1}
  gmp:       {op: pool2d, in: conv_ns, kind: max, output: [1, 1]}
  zeroed:    {op: apply_mask, in: {x: x, mask: self_keep}}
  zeroed_ch: {op: apply_mask, in: {x: img, mask: wkeep}, axis: -1}
  shift:     {op: token_shift, in: x}
  tmix:      {op: token_shift, in: x, mix: true}
  wkv:       {op: wkv, in: {k: lin, v: tmix}}
outputs: {shift: shift, wkv: wkv, placed: placed, bn2: bn2, up2: up2, pool2: pool2, avg2: avg2, gap: gap, gmp: gmp, zeroed: zeroed, zeroed_ch: zeroed_ch, tail: tail, cos: cos, dots: dots, biased: biased, sigmoid_l: sigmoid_l, mel: mel, mel_raw: mel_raw, conv: conv, conv_nb: conv_nb, gnorm: gnorm,
          stored: stored,
          rel_bias: rel_bias, rel_causal: rel_causal, capped: capped, floor0: floor0, regs: regs}
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Case:
    path = tmp_path_factory.mktemp("zoo") / "op-zoo.yaml"
    path.write_text(OP_ZOO)
    return Case(str(path), preset=None)


def test_op_zoo(zoo):
    onnx.checker.check_model(zoo.model, full_check=True)
    _check_shape_inference(zoo)
    sess = _session(zoo.model)
    for dims in ({"B": 2, "n": 5, "m": 7, "t": 300}, {"B": 3, "n": 9, "m": 4, "t": 517}):
        inputs = gf.example_inputs(zoo.spec, dims=dims, seed=1)
        _check_same_outputs(zoo, sess, inputs, f"at {dims}")
    # rows with every key masked: torch's attention gives zeros there, so must the export (not NaN)
    inputs["keep"][1] = False
    inputs["self_keep"][2] = 0
    _check_same_outputs(zoo, sess, inputs, "with fully masked rows")



# The attention of the modern decoder LLMs, one variant per output so that a failure names it:
# grouped-query and multi-query, rotary (full, partial, Llama-3-scaled; from a positions input and
# from 0..n-1), a window shorter than the sequence (with and without padding), q/k RMS norm with an
# explicit scale, per-projection biases, head_dim ≠ d / heads; then every activation kind and `mul`, and
# mixtures of experts with each router (the export's dense form against torch's sparse one).
# At head width 12 and theta 10⁴ the llama3 wavelengths fall in all three of its bands.
LLM_ZOO = """
graphformer: 1
name: llm-zoo
params: {d: 24}
dims: {B: 2, n: 7}
inputs:
  x:    {shape: [B, n, d]}
  keep: {shape: [B, n], dtype: int64}
  pos:  {shape: [B, n], dtype: int64}
blocks:
  ffn:
    inputs: {x: [B, n, d]}
    nodes:
      gate: {op: linear, out: 10, bias: false}
      act:  {op: activation, kind: silu}
      up:   {op: linear, in: x, out: 10}
      glu:  {op: mul, in: [act, up]}
      down: {op: linear, out: d}
    outputs: {y: down}
nodes:
  gqa:      {op: attention, in: x, heads: 6, kv_heads: 2, causal: true}
  mqa:      {op: attention, in: {x: x, mask: keep}, heads: 3, kv_heads: 1, causal: true, bias: false,
             o_bias: true}
  rope:     {op: attention, in: x, heads: 4, causal: true, rope: true, rope_theta: 500.0}
  partial:  {op: attention, in: {x: x, mask: keep, positions: pos}, heads: 4, kv_heads: 2, causal: true,
             rope: true, rope_dims: 2, q_bias: false, k_bias: true, v_bias: false}
  llama3:   {op: attention, in: {x: x, positions: pos}, heads: 2, causal: true, rope: true,
             rope_scaling: llama3, rope_factor: 8.0, rope_low_freq: 1.0, rope_high_freq: 4.0,
             rope_original_max_len: 8192}
  window:   {op: attention, in: {x: x, mask: keep}, heads: 3, causal: true, window: 3}
  slide:    {op: attention, in: x, heads: 6, kv_heads: 3, causal: true, window: 2, rope: true}
  qk_norm:  {op: attention, in: x, heads: 4, qk_norm: rms, eps: 1.0e-5, q_bias: false, v_bias: false,
             scale: 0.3, rope: true}
  narrow:   {op: attention, in: {x: x, mask: keep}, heads: 5, head_dim: 4, bias: false, k_bias: true}
  wide:     {op: attention, in: {x: x, positions: pos}, heads: 2, kv_heads: 1, head_dim: 16, causal: true,
             rope: true, rope_dims: 6, qk_norm: rms, o_bias: false}
  capped:   {op: attention, in: {x: x, mask: keep}, heads: 3, kv_heads: 1, head_dim: 6, causal: true, window: 3,
             softcap: 1.5, scale: 0.7, qk_norm: rms_full, rope: true}
  local:    {op: attention, in: {x: x, mask: keep}, heads: 2, window: 2, softcap: 2.0}
  band:     {op: attention, in: x, heads: 4, window: 3}
  gemma_ln: {op: norm, in: x, kind: rms, unit_offset: true}
  offset_ln: {op: norm, in: x, unit_offset: true}
  soft:     {op: softcap, in: x, cap: 0.5}
  relu:       {op: activation, in: x, kind: relu}
  gelu:       {op: activation, in: x, kind: gelu}
  gelu_tanh:  {op: activation, in: x, kind: gelu_tanh}
  silu:       {op: activation, in: x, kind: silu}
  tanh:       {op: activation, in: x, kind: tanh}
  sigmoid:    {op: activation, in: x, kind: sigmoid}
  quick_gelu: {op: activation, in: x, kind: quick_gelu}
  glu:        {op: mul, in: [silu, gqa]}
  glu3:       {op: mul, in: [gelu_tanh, window, x]}
  moe:        {op: moe, in: gqa, expert: ffn, experts: 4, top_k: 2}
  moe_raw:    {op: moe, in: x, expert: ffn, experts: 3, top_k: 2, normalize: false, router_bias: true}
  moe_logits: {op: moe, in: x, expert: ffn, experts: 5, top_k: 3, router: topk_softmax}
outputs: {gqa: gqa, mqa: mqa, rope: rope, partial: partial, llama3: llama3, window: window, slide: slide,
          qk_norm: qk_norm, narrow: narrow, wide: wide, capped: capped, local: local, band: band, gemma_ln: gemma_ln,
          offset_ln: offset_ln, soft: soft, relu: relu, gelu: gelu, gelu_tanh: gelu_tanh,
          sigmoid: sigmoid, tanh: tanh, quick_gelu: quick_gelu, glu: glu, glu3: glu3, moe: moe, moe_raw: moe_raw,
          moe_logits: moe_logits}
"""


@pytest.fixture(scope="module")
def llm_zoo(tmp_path_factory) -> Case:
    path = tmp_path_factory.mktemp("zoo") / "llm-zoo.yaml"
    path.write_text(LLM_ZOO)
    return Case(str(path), preset=None)


def _left_padded(b: int, n: int, pads: list[int], seed: int) -> dict:
    """x, a left-padding key mask (`pads[i]` leading zeros in row i) and transformers' positions for it
    (cumsum(mask) - 1, clamped at 0) shifted by a per-row offset, as a continued sequence would be."""
    gen = torch.Generator().manual_seed(seed)
    keep = (torch.arange(n)[None] >= torch.tensor(pads)[:, None]).long()
    pos = (keep.cumsum(1) - 1).clamp(min=0) + torch.arange(b)[:, None] * 5
    return {"x": torch.randn(b, n, 24, generator=gen), "keep": keep, "pos": pos}


@pytest.mark.parametrize("opset", [17, 18, 20])
def test_llm_attention_and_activations(llm_zoo, opset):
    """Every new attention variant, activation kind, mul and moe: ORT equals torch at two sizes (n longer than
    the windows), with left padding (rows with no key left included); ONNX's shape inference agrees."""
    model = llm_zoo.model if opset == 17 else to_onnx(llm_zoo.spec, llm_zoo.module, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    case = copy.copy(llm_zoo)
    case.model = model
    _check_shape_inference(case)
    sess = _session(model)
    for b, n, pads in ((2, 7, [0, 3]), (3, 11, [0, 4, 10])):
        _check_same_outputs(case, sess, _left_padded(b, n, pads, seed=n), f"at B={b}, n={n}, pads {pads}")


def test_names_and_dynamic_axes(case):
    spec, g = case.spec, case.model.graph

    def dims_of(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    def ours(t):
        return [d.value if d.is_const else str(d) for d in t.shape]

    assert [i.name for i in g.input] == list(spec.inputs)
    assert [o.name for o in g.output] == list(spec.outputs)
    for vi in g.input:
        assert dims_of(vi) == ours(spec.inputs[vi.name])
    for vi in g.output:
        assert dims_of(vi) == ours(spec.outputs[vi.name])
    # initializers are exactly the state-dict keys that the graph reads, in the torch layout
    expected = param_shapes(spec.ir)
    state = case.module.state_dict()
    for t in g.initializer:
        assert tuple(t.dims) == expected[t.name], t.name
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), state[t.name].numpy())
    # every node is named under the IR path that produced it (or the spec output it renames)
    paths = {n.name for n in spec.ir.nodes()} | set(spec.outputs)
    experts = {n.name for n in spec.ir.nodes() if n.op == "moe"}  # an expert's nodes: `<moe>.experts.<e>.<node>`
    for node in g.node:
        head = node.name.split("/")[0]
        assert head in paths or any(head.startswith(f"{m}.experts.") for m in experts), node.name
    assert case.model.opset_import[0].version == 17


def test_outputs_named_like_other_nodes(tmp_path):
    """An output that is an input, or whose name is another node's path: graph outputs still carry the
    spec's names, and each holds the value of the node the spec says."""
    path = tmp_path / "clash.yaml"
    path.write_text("""
graphformer: 1
name: clash
dims: {B: 2, n: 3}
inputs:
  x: {shape: [B, n, 8]}
nodes:
  attn: {op: attention, heads: 2}
  norm: {op: norm}
outputs: {same: x, attn: norm, raw: attn, norm: norm}
""")
    c = Case(str(path), preset=None)
    onnx.checker.check_model(c.model, full_check=True)
    assert [o.name for o in c.model.graph.output] == ["same", "attn", "raw", "norm"]
    _check_same_outputs(c, _session(c.model), gf.example_inputs(c.spec, seed=0), "")


# ---------------------------------------------------------------- opsets, weights, files

@pytest.mark.parametrize("opset", [18, 20, 21])
@pytest.mark.parametrize("name", ["gpt2", "bert-base", "llama"])
def test_other_opsets(name, opset):
    """Opset 18 moves Reduce* axes to an input; 20 brings Gelu: both paths must stay exact."""
    c = Case(os.path.join(ROOT, "specs", f"{name}.yaml"))
    model = to_onnx(c.spec, c.module, opset=opset, inputs=list(c.spec.inputs))
    onnx.checker.check_model(model, full_check=True)
    inputs = gf.example_inputs(c.spec, seed=3)
    with torch.no_grad():
        ref = c.module(**inputs)
    got = _session(model).run(list(c.spec.outputs), {k: v.numpy() for k, v in inputs.items()})
    for name_, y in zip(c.spec.outputs, got):
        np.testing.assert_allclose(y, ref[name_].numpy(), rtol=0, atol=RTOL * max(1, ref[name_].abs().max().item()))


@pytest.mark.parametrize("opset", [16, 10_000])
def test_bad_opset(opset):
    spec = gf.load(os.path.join(ROOT, "specs", "encoder-block.yaml"), "tiny")
    with pytest.raises(ExportError, match="opset"):
        to_onnx(spec, None, opset=opset)


def test_weights_from_safetensors_and_seed(tmp_path):
    from safetensors.torch import save_file
    spec = gf.load(os.path.join(ROOT, "specs", "gpt2.yaml"), "tiny")
    module = gf.build(spec, seed=7)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    from_file = to_onnx(spec, str(path))
    from_seed = to_onnx(spec, None, seed=7)
    for a, b in zip(from_file.graph.initializer, from_seed.graph.initializer):
        assert a.name == b.name
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
    assert {t.name for t in from_seed.graph.initializer} == set(param_shapes(spec.ir))  # tok.weight once


def test_weights_that_do_not_fit(tmp_path):
    spec = gf.load(os.path.join(ROOT, "specs", "gpt2.yaml"), "tiny")
    sd = dict(gf.build(spec, seed=0).state_dict())
    sd.pop("ln_f.bias")
    sd["extra"] = torch.zeros(1)
    sd["tok.weight"] = torch.zeros(3, 3)
    with pytest.raises(ExportError) as e:
        to_onnx(spec, sd)
    msg = str(e.value)
    assert "`ln_f.bias`" in msg and "`extra`" in msg and "`tok.weight` has shape [3, 3]" in msg


def test_gpt2_hf_weights_through_the_weight_map_match_transformers():
    """ONNX Runtime on the export of a Hugging Face GPT-2 (via the spec's weight map) against transformers."""
    transformers = pytest.importorskip("transformers")
    spec = gf.load(os.path.join(ROOT, "specs", "gpt2.yaml"), "tiny")
    p = spec.params
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=p["vocab"], n_positions=p["max_len"], n_embd=p["d_model"],
                                  n_layer=p["layers"], n_head=p["heads"])
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    model = to_onnx(spec, hf.state_dict(), weights_map="hf", inputs=["mask", "positions"])
    ids = torch.randint(0, p["vocab"], (2, 11))
    with torch.no_grad():
        ref = hf(ids).logits.numpy()
    absent = {"mask": np.ones((2, 11), np.int64), "positions": np.tile(np.arange(11), (2, 1))}  # optional inputs
    (got,) = _session(model).run(["logits"], {"tokens": ids.numpy(), **absent})
    assert np.abs(got - ref).max() <= RTOL * max(1.0, np.abs(ref).max())
    (got,) = _session(to_onnx(spec, hf.state_dict(), weights_map="hf")).run(["logits"], {"tokens": ids.numpy()})
    assert np.abs(got - ref).max() <= RTOL * max(1.0, np.abs(ref).max())   # the default export: tokens alone
    mask = np.array([[1] * 11, [0] * 4 + [1] * 7])          # left padding, with transformers' position ids
    positions = np.clip(mask.cumsum(-1) - 1, 0, None)
    with torch.no_grad():
        ref = hf(ids, attention_mask=torch.from_numpy(mask), position_ids=torch.from_numpy(positions)).logits.numpy()
    (got,) = _session(model).run(["logits"], {"tokens": ids.numpy(), "mask": mask, "positions": positions})
    real = mask.astype(bool)
    assert np.abs(got[real] - ref[real]).max() <= RTOL * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("case", ["llama", "llama-mqa-odd-heads", "llama3-rope-scaling", "llama-tied",
                                  "mistral-window", "mixtral", "qwen2", "phi"])
def test_llm_hf_weights_through_the_weight_map_match_transformers(case):
    """ONNX Runtime on the export of each decoder LLM of tests/integration/test_parity_llm.py (the transformers model
    with random weights, through the spec's `hf` map) against transformers itself: without a mask and
    with left padding (equal at every real token). Mixtral: the dense export against the sparse reference."""
    pytest.importorskip("transformers")
    from parity import lm_batch
    from test_parity_llm import pair
    spec, ref, _ = pair(case)
    model = _session(to_onnx(spec, ref.state_dict(), weights_map="hf", inputs=["mask"]))
    ids, mask = lm_batch()
    with torch.no_grad():
        plain = ref(input_ids=ids).logits.numpy()
        padded = ref(input_ids=ids, attention_mask=mask).logits.numpy()
    (got,) = model.run(["logits"], {"tokens": ids.numpy(), "mask": np.ones_like(mask.numpy())})
    assert np.abs(got - plain).max() <= RTOL * max(1.0, np.abs(plain).max()), case
    (got,) = model.run(["logits"], {"tokens": ids.numpy(), "mask": mask.numpy()})
    real = mask.numpy().astype(bool)
    assert np.abs(got[real] - padded[real]).max() <= RTOL * max(1.0, np.abs(padded).max()), f"{case}, left-padded"


@pytest.mark.parametrize("name", ["gpt2", "clip-vit-b32"])
def test_written_file_is_the_in_memory_model(tmp_path, name):
    """The streamed writer (graph, then the initializers in wire format) parses back to `to_onnx`'s model."""
    spec = gf.load(os.path.join(ROOT, "specs", f"{name}.yaml"), "tiny")
    module = gf.build(spec, seed=0)
    written = export_onnx(spec, module, tmp_path / "m.onnx")
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    assert loaded.SerializeToString() == to_onnx(spec, module).SerializeToString()
    assert written.bytes == (tmp_path / "m.onnx").stat().st_size and written.data_path is None
    assert written.params == sum(p.numel() for p in module.parameters())


def test_external_data(tmp_path):
    """Past the threshold the weights go to `<file>.data` (lowered here from 2 GB to 0 to test cheaply)."""
    spec = gf.load(os.path.join(ROOT, "specs", "bert-base.yaml"), "tiny")
    module = gf.build(spec, seed=0).eval()
    path = tmp_path / "bert.onnx"
    export_onnx(spec, module, path, external_data_threshold=0)
    data = [p for p in os.listdir(tmp_path) if p.endswith(".data")]
    assert (tmp_path / data[0]).stat().st_size >= sum(p.numel() * 4 for p in module.parameters())
    assert sorted(os.listdir(tmp_path)) == ["bert.onnx", data[0]]  # no temp files left behind
    loaded = onnx.load(str(path))  # resolves the external data
    onnx.checker.check_model(str(path), full_check=True)
    inline = to_onnx(spec, module)
    for a, b in zip(loaded.graph.initializer, inline.graph.initializer):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
    inputs = gf.example_inputs(spec, seed=0)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["pooler_output"], {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, module(**inputs)["pooler_output"].numpy(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- CLI

def _cli(*argv) -> int:
    sys.path.insert(0, ROOT)
    try:
        import cli
    finally:
        sys.path.remove(ROOT)
    return cli.main(list(argv))


def test_cli_writes_a_model(tmp_path, capsys):
    out = tmp_path / "gpt2.onnx"
    assert _cli("export", os.path.join(ROOT, "specs", "gpt2.yaml"), "--preset", "tiny", "--seed", "3",
                "--opset", "18", "-o", str(out)) == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    assert "wrote" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["gpt2.onnx"]


@pytest.mark.parametrize("args, code, message", [
    (["--set", "heads=5"], 1, "error[GF123]"),
    (["--opset", "9"], 2, "opset 9 is not supported"),
    (["--weights-map", "hf"], 2, "--weights-map needs --weights"),
    (["--weights", "missing.safetensors"], 2, "no such file"),
])
def test_cli_errors(tmp_path, capsys, args, code, message):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    spec = os.path.join(ROOT, "specs", "gpt2.yaml")
    assert _cli("export", spec, "--preset", "tiny", *args, "-o", str(out)) == code
    assert message in capsys.readouterr().err
    assert out.read_bytes() == b"previous"  # nothing half-written over the old file


def test_cli_bad_weights_file_and_map(tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    spec = os.path.join(ROOT, "specs", "gpt2.yaml")
    assert _cli("export", spec, "--preset", "tiny", "--weights", str(junk), "-o", str(tmp_path / "m.onnx")) == 2
    assert "is not a safetensors file" in capsys.readouterr().err
    good = tmp_path / "own.safetensors"
    from safetensors.torch import save_file
    save_file(gf.build(gf.load(spec, "tiny"), seed=0).state_dict(), str(good))
    # the spec's own state dict is not a Hugging Face one: the map names what does not fit (a spec error)
    assert _cli("export", spec, "--preset", "tiny", "--weights", str(good), "--weights-map", "hf",
                "-o", str(tmp_path / "m.onnx")) == 1
    assert "not used by map `hf`" in capsys.readouterr().err
    assert _cli("export", spec, "--preset", "tiny", "--weights", str(good), "--weights-map", "nope",
                "-o", str(tmp_path / "m.onnx")) == 2  # an unknown map is a usage error
    assert not (tmp_path / "m.onnx").exists()


def test_cli_inputs(tmp_path, capsys):
    """`export` leaves the optional inputs out unless `--inputs` names them; GPT-2 runs on `tokens` alone."""
    spec, out = os.path.join(ROOT, "specs", "gpt2.yaml"), tmp_path / "m.onnx"
    assert _cli("export", spec, "--preset", "tiny", "-o", str(out)) == 0
    assert "optional inputs left out: mask, positions" in capsys.readouterr().err
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["tokens"]
    module = gf.build(gf.load(spec, "tiny"), seed=0).eval()
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = module(tokens=ids)["logits"].numpy()
    (got,) = sess.run(["logits"], {"tokens": ids.numpy()})
    assert np.abs(got - ref).max() <= RTOL * max(1.0, np.abs(ref).max())
    for args, names in ((["--inputs", "mask"], ["tokens", "mask"]),
                        (["--inputs", "positions,mask"], ["tokens", "mask", "positions"]),
                        (["--inputs", "mask", "--inputs", "positions"], ["tokens", "mask", "positions"])):
        assert _cli("export", spec, "--preset", "tiny", *args, "-o", str(out)) == 0
        assert [i.name for i in onnx.load(str(out)).graph.input] == names
    capsys.readouterr()
    for args, message in ((["--inputs", "mak"], "`mak` is not an input of `gpt2` (did you mean `mask`?)"),
                          (["--inputs", "mask,"], "--inputs: give the names"),
                          (["--inputs", "mask", "--with-past"], "a decoder step's inputs are fixed")):
        assert _cli("export", spec, "--preset", "tiny", *args, "-o", str(out)) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ExportError, match="must be a list of the spec.s input names"):
        to_onnx(gf.load(spec, "tiny"), None, inputs=3)


def test_cli_without_the_onnx_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError(name="onnx")
    spec = os.path.join(ROOT, "specs", "gpt2.yaml")
    assert _cli("export", spec, "--preset", "tiny", "-o", str(tmp_path / "m.onnx")) == 2
    assert "pip install 'graphformer[onnx]'" in capsys.readouterr().err
