"""`graphformer.generate`: sampling from a built causal model with a key/value cache derived from its graph.

The IR says what generation needs, through the decoder plan of decoding.py: the token input, the optional
`mask` and `positions` inputs, the `logits` output, every causal attention (each gets a cache slot), the
position tables offset by the cache, an encoder–decoder's encoder and the longest sequence the model serves. The prompt runs eagerly;
every later token is one fixed-shape step, which `compile=True` runs through `torch.compile(fullgraph=True)`,
traced once and reused for every token (and every later call with the same batch and length).
"""
from __future__ import annotations

import torch

from .backends.torch import stages
from .backends.torch.kvcache import ContextCache, KVCache
from .decoding import DecoderPlan, plan_decoder
from .diagnostics import SpecError
from .errors import UsageError


class GenerationError(UsageError):
    """A model or an argument generation cannot serve; `code` is the CLI's exit status (1: the spec
    cannot generate, 2: the arguments are wrong)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class Refusal(GenerationError, SpecError):
    """A spec that cannot generate token by token: the decoder plan's diagnostics (GF210–GF215, the codes
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
        self.model, self.plan = model, plan_generation(model.spec)
        param = next((p for p in model.parameters() if p.is_floating_point()), None)
        dtype = param.dtype if param is not None else torch.get_default_dtype()
        self.device = param.device if param is not None else torch.device("cpu")
        layers = []
        for name in self.plan.slots:
            m = model.node_module(name)
            layers.append((m.kv_heads, m.head_dim, m.window))
        self.cache = KVCache(layers, batch, length, dtype, self.device)
        self.context = ContextCache(len(self.plan.cross))
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
        """Point the decoder's attentions and position ops at the caches (or back at nothing)."""
        cache, context = (self.cache, self.context) if on else (None, None)
        for slots, c in ((list(self.plan.slots), cache), (self.plan.cross, context)):
            for i, name in enumerate(slots):
                m = self.model.node_module(name)
                m.cache, m.layer_id = c, i
        for name in self.plan.offset:
            self.model.node_module(name).cache = cache

    def _forward(self, tokens, mask):
        feed = {**self.encoder_feed, self.plan.tokens: tokens}
        if mask is not None:
            feed[self.plan.mask] = mask
        if self.plan.positions is not None:
            feed[self.plan.positions] = self.cache.positions
        if self.stages is None:
            return self.model(**feed)["logits"][:, -1]                              # (B, vocab)
        ir = self.model.spec.ir
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

    def prompt(self, tokens, mask=None, encoder_inputs: dict | None = None):
        """Run the prompt [B, n] (mask [B, n]: 1 real, 0 left padding) after the encoder on `encoder_inputs`;
        the logits of its last position."""
        self.encode(encoder_inputs)
        keep = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.bool()
        self.cache.start(keep)
        self._attach(True)
        # only the last position's logits are sampled from: a position-wise head sees only it
        hook = self.model.node_module(self.plan.head).register_forward_pre_hook(_last_position) \
            if self.plan.head else None
        try:
            logits = self._forward(tokens, mask.to(tokens.dtype) if mask is not None else None)
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
            logits = self._step(tokens[:, None], mask)
        finally:
            self._attach(False)
        self.cache.advance(1)
        return logits

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
    logits = logits.float() / temperature
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


def _check_args(plan: DecoderPlan, spec_name: str, tokens, mask, max_new_tokens, temperature, top_k, top_p):
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise GenerationError("tokens must be an integer tensor [B, n] of token ids")
    if tokens.shape[0] < 1 or tokens.shape[1] < 1:
        raise GenerationError(f"tokens must hold at least one token per row, got shape {list(tokens.shape)}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be an integer ≥ 0, got {max_new_tokens!r}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= plan.vocab:
        bad = lo if lo < 0 else hi
        raise GenerationError(f"token id {bad} is outside the vocabulary of `{spec_name}` (0..{plan.vocab - 1})")
    n = tokens.shape[1]
    if plan.max_len is not None and n + max_new_tokens > plan.max_len:
        raise GenerationError(f"a prompt of {n} tokens + max_new_tokens {max_new_tokens} = {n + max_new_tokens} "
                              f"positions passes max_len {plan.max_len} (of `{plan.max_len_from}`)")
    if temperature < 0:
        raise GenerationError(f"temperature must be ≥ 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise GenerationError(f"top_k must be ≥ 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise GenerationError(f"top_p must be in (0, 1], got {top_p}")
    if mask is None:
        return
    if plan.mask is None:
        raise GenerationError(f"spec `{spec_name}` has no `mask` input: its prompts cannot be padded "
                              "(give equal-length prompts without a mask)")
    if tuple(mask.shape) != tuple(tokens.shape):
        raise GenerationError(f"mask has shape {list(mask.shape)}, tokens {list(tokens.shape)}: they must match")
    keep = mask.bool()
    # left padding only: once a row's real tokens start, they run to the end (cummax over the row)
    if not bool((keep == keep.long().cummax(dim=-1).values.bool()).all()) or not bool(keep[:, -1].all()):
        raise GenerationError("mask must be left padding (each row: zeros, then ones to the end, with at least "
                              "one 1): a mask with holes or right padding is not causal generation's")


def _check_encoder_inputs(plan: DecoderPlan, spec, tokens, given) -> None:
    """`encoder_inputs` names exactly the encoder's spec inputs (the optional ones may be left out), each a
    tensor with the prompts' batch."""
    ir, name = spec.ir, spec.name
    given = given or {}
    if not isinstance(given, dict):
        raise GenerationError("encoder_inputs must be a dict from spec input name to tensor")
    unknown = [k for k in given if k not in plan.encoder_inputs]
    if unknown:
        what = ", ".join(f"`{k}`" for k in plan.encoder_inputs) or "none: it is a decoder-only model"
        raise GenerationError(f"encoder_inputs names `{unknown[0]}`, which is not an encoder input of `{name}` "
                              f"(encoder inputs: {what})")
    missing = [k for k in plan.encoder_inputs if k not in given and not ir.node(ir.inputs[k]).meta.get("optional")]
    if missing:
        raise GenerationError(f"spec `{name}` is an encoder–decoder: give its encoder input"
                              f"{'s' * (len(missing) > 1)} {', '.join(f'`{k}`' for k in missing)} as "
                              "encoder_inputs={...} (command line: --encoder-ids INPUT=IDS); the prompt is the "
                              "decoder's")
    for k, v in given.items():
        if not isinstance(v, torch.Tensor) or v.dim() < 1 or v.shape[0] != tokens.shape[0]:
            got = list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise GenerationError(f"encoder input `{k}` must be a tensor with the prompts' batch {tokens.shape[0]} "
                                  f"first, got {got}")


_DECODERS = "_graphformer_decoders"   # kept on the model so a compiled step is reused across calls


def decoder_for(model, batch: int, length: int, compile: bool | str = False) -> Decoder:
    """The model's decoder for this batch, reused (with its compiled step) when it holds `length` and the
    model's dtype and device are still the cache's."""
    kept = model.__dict__.setdefault(_DECODERS, {})
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    key = (batch, compile, None if param is None else (param.dtype, param.device))
    d = kept.get(key)
    if d is None or d.length < length:
        d = kept[key] = Decoder(model, batch, length, compile)
    return d


@torch.no_grad()
def generate(model, tokens, max_new_tokens: int, *, mask=None, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, eos_token_id: int | None = None, seed: int | None = None,
             compile: bool | str = False, on_token=None, encoder_inputs: dict | None = None):
    """Continue each prompt row of `tokens` [B, n] by up to `max_new_tokens`; returns [B, n + new].

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
    _check_args(plan, model.spec.name, tokens, mask, max_new_tokens, temperature, top_k, top_p)
    _check_encoder_inputs(plan, model.spec, tokens, encoder_inputs)
    tokens = tokens.to(torch.long)
    if max_new_tokens == 0:
        return tokens
    b, n = tokens.shape
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=tokens.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
    was_training = model.training
    model.eval()
    try:
        dec = decoder_for(model, b, n + max_new_tokens, compile)
        logits = dec.prompt(tokens, mask, encoder_inputs)
        out = [tokens]
        done = torch.zeros(b, dtype=torch.bool, device=tokens.device)
        for i in range(max_new_tokens):
            nxt = sample(logits, temperature, top_k, top_p, generator)
            if eos_token_id is not None:
                nxt = nxt.masked_fill(done, eos_token_id)
                done |= nxt == eos_token_id
            out.append(nxt[:, None])
            if on_token is not None:
                on_token(nxt)
            if i + 1 == max_new_tokens or (eos_token_id is not None and bool(done.all())):
                break
            logits = dec.step(nxt)
    finally:
        model.train(was_training)
    return torch.cat(out, dim=1)
