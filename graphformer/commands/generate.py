"""`graphformer generate SPEC`: continue a prompt with a causal model and a key/value cache, printing each
token as it comes (ids, or text through a tokenizer.json)."""
from __future__ import annotations

import os
import sys
import time

from ..analysis.decoding import plan_decoder
from ..base.diagnostics import SpecError
from .progress import add_quiet
from ..base.dtypes import dtype_arg
from .common import (EXIT_OK, EXIT_SPEC, CommandError, add_spec_args, default_weights, load_checked,
                     import_torch, print_diagnostics, require_weight_map, seed_arg)

NO_TOKENIZERS = "--tokenizer needs the `tokenizers` package: pip install 'graphformer[torch]'"
# generate()'s arguments as this command names them in its refusals
FLAGS = {"tokens": "--prompt-ids", "mask": "--prompt-ids", "max_new_tokens": "--max-new-tokens",
         "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "seed": "--seed",
         "eos_token_id": "--eos-id", "encoder_inputs": "--encoder-ids", "prefix": "--prefix"}
SMALLER = "use a smaller preset, a shorter prompt or fewer --max-new-tokens"
INT64 = 2**63


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate tokens from a causal spec with a key/value cache",
                       description="Build the spec, load --weights, and continue the prompt token by token with a "
                                   "key/value cache derived from the graph, printing tokens as they come (ids, or "
                                   "text with --tokenizer). Greedy unless --temperature > 0. Exit 0 ok, 1 the spec "
                                   "cannot generate, 2 usage or environment.")
    add_spec_args(p)
    add_quiet(p)
    p.add_argument("--weights", metavar="FILE|DIR",
                   help="weights (.safetensors, .pt, .bin, or a save_pretrained directory, read through the hf map): "
                        "the spec's own state dict, or a reference's through --weights-map (default: the "
                        "checkpoint directory given as SPEC, else random init)")
    p.add_argument("--weights-map", metavar="NAME", help="the spec's weight map that names FILE's tensors (e.g. hf)")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt-ids", metavar="IDS", help="the prompt as comma-separated token ids, e.g. 1,2,3")
    prompt.add_argument("--prompt", metavar="TEXT", help="the prompt as text (needs --tokenizer)")
    p.add_argument("--tokenizer", metavar="tokenizer.json", help="a Hugging Face tokenizers file: encodes --prompt "
                                                                 "and decodes the output")
    p.add_argument("--encoder-ids", action="append", default=[], metavar="INPUT=IDS",
                   help="an encoder–decoder's encoder input as comma-separated token ids (repeatable), e.g. "
                        "tokens=5,17,3; the prompt is then the decoder's (T5 starts from 0)")
    p.add_argument("--max-new-tokens", type=int, required=True, metavar="N", help="how many tokens to add")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, help="sample among the most likely tokens whose probability reaches p")
    p.add_argument("--seed", type=seed_arg, help="seed of the sampler (and of the init without --weights)")
    p.add_argument("--eos-id", type=int, help="stop at this token id")
    p.add_argument("--prefix", action="store_true", default=None,
                   help="a prefix LM: the prompt is the bidirectional prefix (the spec's input read as attention's "
                        "`prefix`); always so when that input is required")
    p.add_argument("--compile", action="store_true", help="run each decode step through torch.compile")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--dtype", type=dtype_arg, default="float32",
                   help="float32 (default), bfloat16 or float16 (aliases fp32, bf16, fp16)")


def run(args) -> int:
    default_weights(args)   # a save_pretrained directory (as SPEC or --weights) is read through the hf map
    args.tokenizer = args.tokenizer or _directory_tokenizer(args.spec)
    if args.weights_map and not args.weights:
        raise CommandError("--weights-map needs --weights FILE: the map says how FILE's names fit the spec")
    if args.prompt is not None and not args.tokenizer:
        raise CommandError("--prompt TEXT needs --tokenizer tokenizer.json to turn the text into token ids")
    tokenizer = _tokenizer(args.tokenizer) if args.tokenizer else None
    ids = _prompt_ids(args, tokenizer)
    encoder = _encoder_ids(args.encoder_ids)
    result = load_checked(args.spec, args)
    require_weight_map(result.ir, args.weights_map)
    try:  # the decoder plan export --with-past reads too: a spec that cannot generate fails fast, torch or not
        plan_decoder(result.ir, ("logits",))
    except SpecError as e:
        print_diagnostics(e, "text")
        raise CommandError("", EXIT_SPEC) from None
    generation, backend = import_torch(".backends.torch.generation", ".backends.torch")
    import torch
    from ..ir.spec import Spec
    from ..backends.torch.builder import resolve_device
    spec = Spec.checked(result.ir, result.diagnostics)
    device = resolve_device(args.device)
    if device.type == "meta":
        raise CommandError("--device meta: generation needs values (use cpu or cuda)")
    tokens = torch.tensor([ids], device=device)
    encoder = {k: torch.tensor([v], device=device) for k, v in encoder.items()}
    names = {**FLAGS, **({"tokens": "--prompt"} if args.prompt is not None else {})}
    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, eos_token_id=args.eos_id,
                   seed=args.seed, encoder_inputs=encoder or None, prefix=args.prefix)
    try:
        # everything that can be refused is, before the model is built or any weight is read
        plan = generation.plan_generation(spec)
        dims = generation.check_call(plan, spec, tokens, None, args.max_new_tokens, names=names, **options)
        _require_memory(generation, spec, plan, dims, len(ids), args.max_new_tokens, device, args.dtype)
        model = backend.build(spec, device=device, dtype=args.dtype, seed=args.seed if args.seed is not None else 0)
        _load(model, spec, args)
        printer = _Printer(tokenizer, ids)
        t0 = time.perf_counter()
        out = generation.generate(model.eval(), tokens, args.max_new_tokens, compile=args.compile,
                                  on_token=printer, **options)
    except generation.GenerationError as e:
        raise CommandError(str(e), e.code) from None
    except (MemoryError, RuntimeError) as e:   # what the estimate (a lower bound) did not foresee: exit 2
        from ..analysis import memory
        if memory.is_out_of_memory(e):
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CommandError(f"out of memory during generation: {first}; {SMALLER}") from None
        raise
    printer.end()
    new = out.shape[1] - len(ids)
    secs = time.perf_counter() - t0
    sys.stderr.write(f"{new} tokens in {secs:.2f} s ({new / secs:.1f} tokens/s)\n")
    return EXIT_OK


def _require_memory(generation, spec, plan, dims: dict, n: int, new: int, device, dtype: str) -> None:
    """The weights (built in float32, then cast), the key/value cache, the output and the prompt's forward,
    against the memory available on the device: refused (exit 2) before any of them is allocated."""
    from ..analysis import memory
    needed = memory.param_bytes(spec.ir) + generation.generation_bytes(plan, spec.ir, dims, 1, n + new, dtype)
    memory.require(needed, f"building `{spec.name}` and generating {new:,} tokens after {n:,}", str(device),
                   hint=SMALLER)


def _directory_tokenizer(spec: str) -> str | None:
    """A checkpoint directory given as SPEC brings its tokenizer.json, when it has one."""
    from ..weights.checkpoint import is_hf_directory
    if not is_hf_directory(spec) or not os.path.lexists(os.path.join(spec, "tokenizer.json")):
        return None
    from ..base.reading import FileProblem, inside
    try:
        return inside(spec, "tokenizer.json")   # confined to the directory
    except FileProblem as e:
        raise CommandError(f"{spec}: {e}") from None


def _tokenizer(path: str):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise CommandError(NO_TOKENIZERS) from None
    from ..base.reading import FileProblem, read_text
    try:   # read by us (a regular file, bounded), parsed by tokenizers
        return Tokenizer.from_str(read_text(path, "tokenizer"))
    except FileProblem as e:
        raise CommandError(f"--tokenizer: {e}") from None
    except Exception as e:  # a missing or foreign file: the user's to fix
        raise CommandError(f"--tokenizer: cannot read `{path}`: {e}") from None


def _prompt_ids(args, tokenizer) -> list[int]:
    if args.prompt is not None:
        ids = tokenizer.encode(args.prompt).ids
        if not ids:
            raise CommandError("--prompt: the tokenizer turns this text into no tokens")
        return ids
    try:
        ids = [int(t) for t in args.prompt_ids.replace(" ", "").split(",")]
    except ValueError:
        raise CommandError(f"--prompt-ids expects comma-separated integers, got `{args.prompt_ids}`") from None
    return _int64("--prompt-ids", ids)


def _int64(flag: str, ids: list[int]) -> list[int]:
    """Ids a tensor can hold (the vocabulary is checked once the spec is read)."""
    bad = next((t for t in ids if not -INT64 <= t < INT64), None)
    if bad is not None:
        raise CommandError(f"{flag}: token id {bad} is outside the vocabulary (not even a 64-bit integer)")
    return ids


def _encoder_ids(items: list[str]) -> dict[str, list[int]]:
    out = {}
    for item in items:
        name, sep, ids = item.partition("=")
        name = name.strip()
        try:
            out[name] = _int64(f"--encoder-ids `{name}`", [int(t) for t in ids.replace(" ", "").split(",")])
        except ValueError:
            sep = ""
        if not sep or not name:
            raise CommandError(f"--encoder-ids expects INPUT=comma-separated integers, got `{item}`")
    return out


def _load(model, spec, args) -> None:
    if not args.weights:
        sys.stderr.write("note: no --weights: the model has random weights\n")
        return
    from .build import _load_weights
    if args.weights_map:
        _load_weights(model, spec, args, model_device(model))
        return
    from ..weights.maps import WeightFileError, read_state_dict
    try:
        state = read_state_dict(args.weights)
    except WeightFileError as e:
        raise CommandError(f"--weights: {e}") from None
    import torch
    try:   # the reader is torch-free: it may hand back numpy arrays
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    except (RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()
        raise CommandError(f"--weights: `{args.weights}` does not fit spec `{spec.name}` (give --weights-map if it "
                           f"holds a reference's names): {' '.join(first[:3])}", EXIT_SPEC) from None


def model_device(model):
    return next(model.parameters()).device


class _Printer:
    """Streams new tokens to stdout: ids separated by spaces, or the text they add to the prompt's."""

    def __init__(self, tokenizer, prompt: list[int]):
        self.tokenizer, self.ids = tokenizer, list(prompt)
        self.shown = tokenizer.decode(self.ids) if tokenizer else ""
        if tokenizer:
            sys.stdout.write(self.shown)
            sys.stdout.flush()

    def __call__(self, new) -> None:
        token = int(new[0])
        self.ids.append(token)
        if self.tokenizer is None:
            sys.stdout.write(f"{token} ")
        else:
            text = self.tokenizer.decode(self.ids)
            # a token may complete a multi-byte character or merge with its neighbour: print the new suffix
            if text.startswith(self.shown):
                sys.stdout.write(text[len(self.shown):])
            self.shown = text
        sys.stdout.flush()

    def end(self) -> None:
        sys.stdout.write("\n")
