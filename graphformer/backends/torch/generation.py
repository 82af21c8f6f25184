"""`graphformer.generate`: sampling from a built causal model with a key/value cache derived from its graph.

The IR says what generation needs, through the decoder plan of decoding.py: the token input, the optional
`mask` and `positions` inputs, the `logits` output, every causal attention (each gets a cache slot), every
recurrence (each gets a state slot: Mamba's scan and causal convolution, O(1) work and memory per step), the
position tables offset by the cache, an encoder–decoder's encoder and the longest sequence the model serves.
The prompt runs eagerly;
every later token is one fixed-shape step, which `compile=True` runs through `torch.compile(fullgraph=True)`,
traced once and reused for every token (and every later call with the same batch and length).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...analysis import memory
from . import stages
from .kvcache import FEWER, ContextCache, KVCache, StateCache
from ...base.dims import Dim
from ...base.errors import UsageError
from ...analysis.decoding import DecoderPlan, plan_decoder
from ...ops import REGISTRY
from ...ops.base import dtype_bytes
from ...base.diagnostics import SpecError


class GenerationError(UsageError, ValueError):
    """A model or an argument generation cannot serve; `code` is the CLI's exit status (1: the spec
    cannot generate, 2: the arguments are wrong)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class Refusal(GenerationError, SpecError):
    """A spec that cannot generate token by token: the decoder plan's diagnostics (GF210–GF215, GF293, the codes
    `export --with-past` refuses with), exit 1."""

    def __init__(self, error: SpecError):
        SpecError.__init__(self, error.diagnostics)
        d = self.diagnostics[0]
        self.args = (f"error[{d.code}]: {d.message}",)
        self.code = 1


def plan_generation(spec) -> DecoderPlan:
    """The decoder plan of the `logits` output (decoding.py, the one `export --with-past` reads too): cache
    slots, the encoder run once per sequence, the inputs to feed. `Refusal` for a spec that cannot decode
    token by token."""
    try:
        return plan_decoder(spec.ir, ("logits",))
    except SpecError as e:
        raise Refusal(e) from None


class Decoder:
    """A model bound to a key/value cache for a batch and a total length: `prompt()` then `step()`."""

    def __init__(self, model, batch: int, length: int, compile: bool | str = False):
        batch, length = _int_arg("batch", batch, 1), _int_arg("length", length, 1)
        self.model, self.plan = model, plan_generation(model.spec)
        param = next((p for p in model.parameters() if p.is_floating_point()), None)
        dtype = param.dtype if param is not None else torch.get_default_dtype()
        self.device = param.device if param is not None else torch.device("cpu")
        layers = []
        for name in self.plan.slots:
            m = model.node_module(name)
            value = getattr(m, "value_dim", m.head_dim)    # latent attention: values narrower than keys
            layers.append((m.kv_heads, m.head_dim, m.window) + ((value,) if value != m.head_dim else ()))
        self.cache = KVCache(layers, batch, length, dtype, self.device)
        self.context = ContextCache(len(self.plan.cross))
        self.states = StateCache(list(self.plan.states.values()), batch, dtype, self.device)
        self.batch, self.length = batch, length
        ir = model.spec.ir
        self.stages = None     # an encoder–decoder runs its encoder once per sequence, then the decoder per step
        if self.plan.encoder:
            fixed = self.plan.encoder | {ir.inputs[k] for k in self.plan.encoder_inputs}
            try:
                self.stages = stages.split(model, fixed, {"logits": ir.outputs["logits"]})
            except stages.SplitError as e:
                raise GenerationError(f"spec `{model.spec.name}` cannot generate: {e}", 1) from None
        self.encoder_feed: dict = {}    # this sequence's encoder inputs, by spec input name
        self.handed: dict = {}          # the encoder's values the decoder reads, by IR value
        if compile:   # True: inductor; a string names another torch.compile backend (e.g. "eager")
            backend = "inductor" if compile is True else compile
            self._step = torch.compile(self._forward, fullgraph=True, backend=backend)
        else:
            self._step = self._forward

    def _attach(self, on: bool) -> None:
        """Point the decoder's attentions and position ops at the caches (or back at nothing). Twice a step, so
        the plain attributes are written to the instance dict directly: nn.Module.__setattr__'s checks for
        parameters, buffers and submodules cost more than the rest of this loop."""
        cache, context = (self.cache, self.context) if on else (None, None)
        for slots, c in ((list(self.plan.slots), cache), (self.plan.cross, context)):
            for i, name in enumerate(slots):
                vars(self.model.node_module(name)).update(cache=c, layer_id=i)
        for name in self.plan.offset:
            vars(self.model.node_module(name))["cache"] = cache
        for i, name in enumerate(self.plan.states):    # recurrences: a step starts from the carried state
            vars(self.model.node_module(name)).update(cache=self.states if on else None, layer_id=i)

    def _forward(self, tokens, mask, prefix=None):
        feed = {**self.encoder_feed, self.plan.tokens: tokens}
        if mask is not None:
            feed[self.plan.mask] = mask
        if prefix is not None:
            feed[self.plan.prefix] = prefix
        if self.plan.positions is not None:
            feed[self.plan.positions] = self.cache.positions
        if self.stages is None:   # the module fills the inputs with a default (plan.unfed) itself
            return self.model(**feed)["logits"][:, -1]                              # (B, vocab)
        ir = self.model.spec.ir
        self.model.fill_defaults(feed, self.plan.unfed)
        by_node = {ir.inputs[k]: v for k, v in feed.items()}
        return self.stages.decode(self.model, by_node, self.handed)["logits"][:, -1]

    def encode(self, encoder_inputs: dict | None = None) -> None:
        """Start a sequence: run the encoder once on `encoder_inputs` (by spec input name), forget the
        cross-attentions' keys and values. A decoder-only model takes no encoder inputs."""
        self.encoder_feed = dict(encoder_inputs or {})
        self.context.start()
        if self.stages is not None:
            ir = self.model.spec.ir
            self.handed = self.stages.encode(self.model, {ir.inputs[k]: v for k, v in self.encoder_feed.items()})

    def prompt(self, tokens, mask=None, encoder_inputs: dict | None = None, prefix: bool | None = None):
        """Run the prompt [B, n] (mask [B, n]: 1 real, 0 left padding) after the encoder on `encoder_inputs`;
        the logits of its last position. `prefix`: a prefix LM's prompt is its prefix (bidirectional over
        the prompt); None: so when the spec requires its `prefix` input."""
        self.encode(encoder_inputs)
        keep = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.bool()
        self.cache.start(keep)
        self.states.start()
        self._attach(True)
        # only the last position's logits are sampled from: a position-wise head sees only it
        hook = self.model.node_module(self.plan.head).register_forward_pre_hook(_last_position) \
            if self.plan.head else None
        try:
            logits = self._forward(tokens, mask.to(tokens.dtype) if mask is not None else None,
                                   torch.ones_like(tokens) if self._prefix_fed(prefix) else None)
        finally:
            self._attach(False)
            if hook is not None:
                hook.remove()
        self.cache.advance(tokens.shape[1])
        return logits

    def step(self, tokens):
        """One new token per row [B] → the logits [B, vocab] of the next."""
        if self.cache.written >= self.length:
            raise GenerationError(f"the cache holds {self.length} positions and all are used")
        self._attach(True)
        try:
            # a required mask input gets ones: the cache keeps the real key mask
            mask = torch.ones_like(tokens[:, None]) if self._mask_required() else None
            # a required prefix gets ones too: a new token sees every earlier one anyway (cached keys count
            # as outside the step's prefix), so the step is causal
            ones = torch.ones_like(tokens[:, None]) if self._prefix_required() else None
            logits = self._step(tokens[:, None], mask, ones) if ones is not None else \
                self._step(tokens[:, None], mask)
        finally:
            self._attach(False)
        self.cache.advance(1)
        return logits

    def _prefix_required(self) -> bool:
        ir = self.model.spec.ir
        return self.plan.prefix is not None and not ir.node(ir.inputs[self.plan.prefix]).meta.get("optional")

    def _prefix_fed(self, prefix: bool | None) -> bool:
        """Whether the prompt runs as a prefix LM's prefix (`_check_prefix` refused what cannot be)."""
        _check_prefix(self.plan, self.model.spec, prefix, API_NAMES)
        return self._prefix_required() if prefix is None else bool(prefix)

    def _mask_required(self) -> bool:
        ir = self.model.spec.ir
        return self.plan.mask is not None and not ir.node(ir.inputs[self.plan.mask]).meta.get("optional")


def _last_position(module, args):
    return (args[0][:, -1:],) + tuple(args[1:])


def sample(logits, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None):
    """Next tokens [B] from logits [B, vocab]: argmax at temperature 0, else top-k / nucleus sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    # shifted by the maximum and divided by a temperature clamped to float32's range: no inf - inf or 0 / 0,
    # however small or large the temperature (the tiniest ones tend to greedy, as they should)
    logits = logits.float()
    f32 = torch.finfo(torch.float32)
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / min(max(temperature, f32.tiny), f32.max)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p              # the most likely token always stays
        logits = logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


# The names a refusal gives each argument: the Python API's, or the command line's flags (commands/generate.py).
API_NAMES = {k: k for k in ("tokens", "mask", "max_new_tokens", "temperature", "top_k", "top_p", "seed",
                            "eos_token_id", "encoder_inputs", "prefix")}
MAX_SEED = 2**64 - 1     # torch.Generator.manual_seed's range (negative seeds excluded, as `--seed` everywhere)


def check_call(plan: DecoderPlan, spec, tokens, mask, max_new_tokens, *, temperature=0.0, top_k=None, top_p=None,
               seed=None, eos_token_id=None, encoder_inputs=None, prefix=None,
               names: dict = API_NAMES) -> dict[str, int]:
    """Every argument of `generate`, before any work: GenerationError (exit 2) naming the argument and its
    value. Returns the sizes of the symbolic dims the fed inputs bind (for the memory estimate)."""
    dims = _check_tokens(plan, spec, tokens, mask, names)
    _check_length(plan, tokens.shape[1], max_new_tokens, names)
    _check_sampling(plan, temperature, top_k, top_p, seed, eos_token_id, names)
    _check_prefix(plan, spec, prefix, names)
    return _check_encoder_inputs(plan, spec, tokens, encoder_inputs, dims, names)


def _check_prefix(plan: DecoderPlan, spec, prefix, names) -> None:
    """`prefix` (the prompt as a prefix LM's prefix): None, or a bool the spec can honour."""
    if prefix is None:
        return
    if not isinstance(prefix, bool):
        raise GenerationError(f"{names['prefix']} must be true or false, got {prefix!r}")
    required = plan.prefix is not None and not spec.ir.node(spec.ir.inputs[plan.prefix]).meta.get("optional")
    if prefix and plan.prefix is None:
        raise GenerationError(f"spec `{spec.name}` has no input read as attention's `prefix`: it is not a prefix LM")
    if not prefix and required:
        raise GenerationError(f"spec `{spec.name}` requires its `{plan.prefix}` input: its prompt is always the "
                              "prefix")


def _int_arg(name: str, value, lo: int, hi: int | None = None) -> int:
    """`value` as an int in lo … hi (hi None: unbounded); bools and floats are refused, not truncated."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise GenerationError(f"{name} must be an integer, got {value!r}")
    v = value.__index__()
    if v < lo or (hi is not None and v > hi):
        bounds = f"≥ {lo}" if hi is None else f"in {lo} … {hi}"
        raise GenerationError(f"{name} must be an integer {bounds}, got {v}")
    return v


def _real_arg(name: str, value) -> float:
    """`value` as a finite float."""
    try:
        v = None if isinstance(value, (bool, str, bytes)) else float(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        v = None
    if v is None:
        raise GenerationError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(v):
        raise GenerationError(f"{name} must be a finite number, got {v}")
    return v


def _check_ids(name: str, ids, vocab: int, spec_name: str) -> None:
    """Integer ids, every one in 0 … vocab − 1 (an embedding's rows)."""
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise GenerationError(f"{name} must hold integer token ids, got a {str(ids.dtype).removeprefix('torch.')} "
                              "tensor")
    if ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab:
        raise GenerationError(f"{name}: token id {lo if lo < 0 else hi} is outside the vocabulary of `{spec_name}` "
                              f"(0..{vocab - 1})")


def _check_tokens(plan: DecoderPlan, spec, tokens, mask, names) -> dict[str, int]:
    """The prompt: ids [B, n] in the vocabulary, and its mask (left padding only). Binds B and n."""
    name = names["tokens"]
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        got = list(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise GenerationError(f"{name} must be an integer tensor [B, n] of token ids, got {got}")
    if tokens.shape[0] < 1 or tokens.shape[1] < 1:
        raise GenerationError(f"{name} must hold at least one token per row, got shape {list(tokens.shape)}")
    _check_ids(name, tokens, plan.vocab, spec.name)
    dims = _bind(spec.ir, plan.tokens, tuple(tokens.shape), {}, name, strict=False)   # only its sizes
    if mask is None:
        return dims
    if plan.mask is None:
        raise GenerationError(f"spec `{spec.name}` has no `mask` input: its prompts cannot be padded "
                              "(give equal-length prompts without a mask)")
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(tokens.shape):
        got = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise GenerationError(f"{names['mask']} has shape {got}, {name} {list(tokens.shape)}: they must match")
    keep = mask.bool()
    # left padding only: once a row's real tokens start, they run to the end (cummax over the row)
    if not bool((keep == keep.long().cummax(dim=-1).values.bool()).all()) or not bool(keep[:, -1].all()):
        raise GenerationError(f"{names['mask']} must be left padding (each row: zeros, then ones to the end, with "
                              "at least one 1): a mask with holes or right padding is not causal generation's")
    return dims


def _check_length(plan: DecoderPlan, n: int, max_new_tokens, names) -> None:
    name = names["max_new_tokens"]
    new = _int_arg(name, max_new_tokens, 1)
    if plan.max_len is not None and n + new > plan.max_len:
        raise GenerationError(f"a prompt of {n} tokens + {name} {new} = {n + new} positions passes max_len "
                              f"{plan.max_len} (of `{plan.max_len_from}`)")


def _check_sampling(plan: DecoderPlan, temperature, top_k, top_p, seed, eos_token_id, names) -> None:
    if _real_arg(names["temperature"], temperature) < 0:
        raise GenerationError(f"{names['temperature']} must be ≥ 0 (0 is greedy), got {temperature}")
    if top_k is not None:
        _int_arg(names["top_k"], top_k, 1)
    if top_p is not None and not 0 < _real_arg(names["top_p"], top_p) <= 1:
        raise GenerationError(f"{names['top_p']} must be in (0, 1], got {top_p}")
    if seed is not None:
        _int_arg(names["seed"], seed, 0, MAX_SEED)
    if eos_token_id is not None:
        _int_arg(names["eos_token_id"], eos_token_id, 0, plan.vocab - 1)


def _bind(ir, input_name: str, shape: tuple, dims: dict[str, int], what: str, strict: bool = True) -> dict:
    """`dims` plus the symbols of spec input `input_name` bound by a tensor of `shape`; a rank, a fixed size or
    a symbol that disagrees is refused (`strict`) or left out of the binding."""
    declared = ir.node(ir.inputs[input_name]).shape.shape
    if len(declared) != len(shape) and not strict:
        return dict(dims)
    if len(declared) != len(shape):
        raise GenerationError(f"{what} has {len(shape)} dims {list(shape)}, spec input `{input_name}` "
                              f"{len(declared)}: [{', '.join(map(str, declared))}]")
    out = dict(dims)
    for d, size in zip(declared, shape):
        if len(d.symbols) == 1 and d == Dim.sym(next(iter(d.symbols))):
            sym = next(iter(d.symbols))
            if out.setdefault(sym, size) == size:
                continue
        elif d.symbols - out.keys() or d.evaluate(out) == size:
            continue
        if strict:
            raise GenerationError(f"{what} has shape {list(shape)}, which does not fit spec input `{input_name}` "
                                  f"[{', '.join(map(str, declared))}] at {_dims_text(out)}")
    return out


def _dims_text(dims: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in dims.items()) or "its sizes"


def _check_encoder_inputs(plan: DecoderPlan, spec, tokens, given, dims: dict[str, int],
                          names=API_NAMES) -> dict[str, int]:
    """`encoder_inputs` names exactly the encoder's spec inputs (the optional ones may be left out), each a
    tensor of the spec input's shape with the prompts' batch; ids read by an embedding within its vocabulary.
    Returns `dims` with the encoder inputs' symbols bound."""
    ir, name, arg = spec.ir, spec.name, names["encoder_inputs"]
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise GenerationError(f"{arg} must be a dict from spec input name to tensor, got {type(given).__name__}")
    unknown = [k for k in given if k not in plan.encoder_inputs]
    if unknown:
        what = ", ".join(f"`{k}`" for k in plan.encoder_inputs) or "none: it is a decoder-only model"
        raise GenerationError(f"{arg} names `{unknown[0]}`, which is not an encoder input of `{name}` "
                              f"(encoder inputs: {what})")
    missing = [k for k in plan.encoder_inputs if k not in given and not ir.node(ir.inputs[k]).meta.get("optional")]
    if missing:
        raise GenerationError(f"spec `{name}` is an encoder–decoder: give its encoder input"
                              f"{'s' * (len(missing) > 1)} {', '.join(f'`{k}`' for k in missing)} as "
                              "encoder_inputs={...} (command line: --encoder-ids INPUT=IDS); the prompt is the "
                              "decoder's")
    batch = ir.node(ir.inputs[plan.tokens]).shape.shape[0]
    bound = {k: v for k, v in dims.items() if k == _batch_symbol(ir, plan)}   # the decoder's length is its own
    for k, v in given.items():
        # an input batched otherwise (Gemma-3's images [I, ...], any number per prompt) is bound by `_bind`
        batched = ir.node(ir.inputs[k]).shape.shape[0] == batch
        if not isinstance(v, torch.Tensor) or v.dim() < 1 or (batched and v.shape[0] != tokens.shape[0]):
            got = list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise GenerationError(f"{arg} `{k}` must be a tensor with the prompts' batch {tokens.shape[0]} "
                                  f"first, got {got}")
        vocab = _vocab_of(ir, k)
        if vocab is not None:
            _check_ids(f"{arg} `{k}`", v, vocab, name)
        elif v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise GenerationError(f"{arg} `{k}` holds a NaN or an infinity")
        bound = _bind(ir, k, tuple(v.shape), bound, f"{arg} `{k}`")
    return {**dims, **bound}


def _batch_symbol(ir, plan: DecoderPlan) -> str | None:
    first = ir.node(ir.inputs[plan.tokens]).shape.shape[0]
    return next(iter(first.symbols)) if len(first.symbols) == 1 else None


def _vocab_of(ir, input_name: str) -> int | None:
    """The smallest vocabulary of the embeddings that read spec input `input_name` (None: none reads it)."""
    vocabs = [c.attrs.vocab for c, _ in ir.consumers(ir.inputs[input_name]) if REGISTRY[c.op].token_table]
    return min(vocabs) if vocabs else None


def cache_layers(plan: DecoderPlan, ir) -> list[tuple]:
    """(kv_heads, head_dim, window[, value_dim]) of every cache slot, read from the IR as the torch build
    sizes them (value_dim where values are narrower than keys: latent attention)."""
    out = []
    for s in sorted(plan.slots.values(), key=lambda s: s.layer):
        window = getattr(ir.node(s.node).attrs, "window", None) or None
        out.append((s.kv_heads, s.head_dim, window) + ((s.value_dim,) if s.value_dim else ()))
    return out


def generation_bytes(plan: DecoderPlan, ir, dims: dict[str, int], batch: int, length: int, dtype: str,
                     cache: bool = True) -> int:
    """A lower bound of what generating `length` positions allocates besides the weights: the key/value cache
    and the recurrent states (unless `cache` is False: existing ones are reused), the output ids, and the
    prompt's forward (the encoder's included) at `dims`."""
    itemsize = dtype_bytes(dtype)
    kv = KVCache.nbytes(cache_layers(plan, ir), batch, length, itemsize) + \
        StateCache.nbytes(list(plan.states.values()), batch, itemsize) if cache else 0
    return kv + 8 * batch * length + memory.forward_bytes(ir, dims, dtype, partial=True)


def _require_memory(model, plan: DecoderPlan, dims: dict[str, int], batch: int, n: int, new: int,
                    compile) -> None:
    """Refuse (UsageError, exit 2) a generation whose cache, output and prompt forward cannot fit, before any
    of them is allocated."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    device = str(param.device) if param is not None else "cpu"
    reuse = _kept_decoder(model, batch, n + new, compile) is not None
    needed = generation_bytes(plan, model.spec.ir, dims, batch, n + new, str(dtype).removeprefix("torch."),
                              cache=not reuse)
    memory.require(needed, f"generating {new:,} tokens after {n:,} from `{model.spec.name}` at batch {batch:,}",
                   device, hint=FEWER)


_DECODERS = "_graphformer_decoders"   # kept on the model so a compiled step is reused across calls


def _decoder_key(model, batch: int, compile) -> tuple:
    """What a kept decoder must share with this call. Inference mode too: a cache made inside
    `torch.inference_mode()` holds inference tensors, which may not be updated in place outside it."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    return batch, compile, None if param is None else (param.dtype, param.device), torch.is_inference_mode_enabled()


def _kept_decoder(model, batch: int, length: int, compile) -> Decoder | None:
    """The model's decoder for this batch if it holds `length` and the model's dtype and device are still
    the cache's."""
    d = model.__dict__.get(_DECODERS, {}).get(_decoder_key(model, batch, compile))
    return d if d is not None and d.length >= length else None


def decoder_for(model, batch: int, length: int, compile: bool | str = False) -> Decoder:
    """The model's decoder for this batch, reused (with its compiled step) when it holds `length`."""
    d = _kept_decoder(model, batch, length, compile)
    if d is None:
        kept = model.__dict__.setdefault(_DECODERS, {})
        key = _decoder_key(model, batch, compile)
        for k in [k for k in kept if k[:3] == key[:3]]:
            del kept[k]            # a shorter cache, or one of the other inference mode, goes before this one
        d = kept[key] = Decoder(model, batch, length, compile)
    return d


@torch.no_grad()
def generate(model, tokens, max_new_tokens: int, *, mask=None, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, eos_token_id: int | None = None, seed: int | None = None,
             compile: bool | str = False, on_token=None, encoder_inputs: dict | None = None,
             prefix: bool | None = None):
    """Continue each prompt row of `tokens` [B, n] by up to `max_new_tokens`; returns [B, n + new].

    A prefix LM (an input read as `attention`'s `prefix`) attends bidirectionally over the whole prompt
    when `prefix` is true, or by default when that input is required; the generated tokens are causal.

    An encoder–decoder (T5, Whisper) takes its encoder's inputs as `encoder_inputs` (by spec input name,
    e.g. `{"tokens": ids, "mask": mask}`); `tokens` is then the decoder's prompt (its start token). The
    encoder runs once, and each cross-attention projects its keys and values once.

    `mask` [B, n] (1 = token, 0 = left padding) batches prompts of different lengths. Greedy at
    temperature 0; otherwise top-k / nucleus sampling from a generator seeded with `seed`. A row that
    produced `eos_token_id` continues with it; generation stops once every row has. `on_token(new [B])`
    is called with every step's tokens (streaming). `compile=True` runs each one-token step through
    `torch.compile(fullgraph=True)` (a string names the backend); it is traced once per batch size.
    """
    plan = plan_generation(model.spec)
    dims = check_call(plan, model.spec, tokens, mask, max_new_tokens, temperature=temperature, top_k=top_k,
                      top_p=top_p, seed=seed, eos_token_id=eos_token_id, encoder_inputs=encoder_inputs,
                      prefix=prefix)
    b, n = tokens.shape
    _require_memory(model, plan, dims, b, n, max_new_tokens, compile)
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=tokens.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
    was_training = model.training
    model.eval()
    out = torch.empty(b, n + max_new_tokens, dtype=torch.long, device=tokens.device)   # counted above
    out[:, :n] = tokens
    try:
        dec = decoder_for(model, b, n + max_new_tokens, compile)
        logits = dec.prompt(out[:, :n], mask, encoder_inputs, prefix)
        done = torch.zeros(b, dtype=torch.bool, device=tokens.device)
        for i in range(max_new_tokens):
            nxt = sample(logits, temperature, top_k, top_p, generator)
            if eos_token_id is not None:
                nxt = nxt.masked_fill(done, eos_token_id)
                done |= nxt == eos_token_id
            out[:, n + i] = nxt
            if on_token is not None:
                on_token(nxt)
            if i + 1 == max_new_tokens or (eos_token_id is not None and bool(done.all())):
                break
            logits = dec.step(nxt)
    finally:
        model.train(was_training)
    end = n + i + 1
    return out if end == out.shape[1] else out[:, :end].clone()   # an early stop keeps no unused tail
