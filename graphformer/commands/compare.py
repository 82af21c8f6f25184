"""`graphformer compare SPEC --reference DIR`: our build and transformers' model on the same inputs.

The check a spec for an architecture outside the catalogue needs before anyone trusts it: DIR's config
builds the reference (backends/torch/reference.py says how, and what never runs), its weights — DIR's, or
a seeded initialisation where DIR holds only a config — reach our build through the spec's weight map,
and every output the two share is compared. Exit 0 when all are equal within the bound, 1 when one differs
(the spec computes something else), 2 for usage and environment.
"""
from __future__ import annotations

import os
import sys

from ..analysis import memory
from .common import (EXIT_OK, EXIT_SPEC, CommandError, add_spec_args, import_torch, load_checked, parse_assignments,
                     require_weight_map, seed_arg)
from .progress import add_quiet


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="run the spec and transformers' model on the same inputs, compare outputs",
                       description="Build the spec and the transformers model a config.json describes, give both "
                                   "the same weights (the checkpoint's, or a seeded random initialisation when "
                                   "--reference holds only a config) through the spec's weight map, run both on "
                                   "the same random inputs and compare every output they share. Exit 0 equal, "
                                   "1 an output differs, 2 usage or environment.")
    add_spec_args(p, dims=True)
    add_quiet(p)
    p.add_argument("--reference", metavar="DIR|config.json",
                   help="a save_pretrained directory or a config.json (default: SPEC, when SPEC is a directory)")
    p.add_argument("--reference-class", metavar="NAME",
                   help="transformers' model class (default: the config's `architectures`)")
    p.add_argument("--weights-map", metavar="NAME", default="hf", help="the spec's map that reads the reference's "
                   "tensors (default hf)")
    p.add_argument("--input", dest="inputs", action="extend", nargs="+", metavar="OURS=THEIRS", default=[],
                   help="pair a spec input with the reference's forward argument, e.g. tokens=input_ids")
    p.add_argument("--output", dest="outputs", action="extend", nargs="+", metavar="OURS=THEIRS", default=[],
                   help="pair a spec output with the reference's output field, e.g. hidden=last_hidden_state")
    p.add_argument("--padded", action="store_true", help="feed the padding masks, with padded rows (the first row "
                   "full); outputs compared at the kept positions only. Without it, inputs a call may leave out "
                   "(masks) are left out on both sides")
    p.add_argument("--rtol", type=float, default=1e-5,
                   help="bound on the max abs error, relative to max(1, the reference output's magnitude); default 1e-5")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the inputs and of a random reference (default 0)")
    p.add_argument("--generate", type=int, default=0, metavar="N", help="also continue the example prompts by N "
                   "greedy tokens with both (graphformer.generate with its cache, transformers' generate): a decoder's "
                   "cached steps compared token for token")


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise CommandError(f"{flag} {item}: expected OURS=THEIRS, e.g. tokens=input_ids")
        out[ours] = theirs
    return out


def run(args) -> int:
    from ..base.errors import UsageError
    from ..frontend.hf import HFImportError, config_mismatches, family_of, read_config
    from ..weights.checkpoint import CANDIDATES, checkpoint_files, is_hf_directory

    source = args.reference or (args.spec if isinstance(args.spec, str) and is_hf_directory(args.spec) else None)
    if source is None:
        raise CommandError("compare needs the reference: --reference DIR (a save_pretrained directory or a "
                           "config.json)")
    inputs_given, outputs_given = _pairs(args.inputs, "--input"), _pairs(args.outputs, "--output")
    if not 0 <= args.generate <= 4096:
        raise CommandError(f"--generate must be from 0 to 4096 tokens, got {args.generate}")
    if not args.rtol > 0:
        raise CommandError(f"--rtol must be above 0, got {args.rtol}")
    try:
        cfg = read_config(source)
    except HFImportError as e:
        raise CommandError(f"--reference: {e}", e.code) from None
    weights = None
    if os.path.isdir(source) and any(os.path.lexists(os.path.join(source, n)) for n, _ in CANDIDATES):
        weights = source
        if not all(f.endswith(".safetensors") for f in _files(checkpoint_files, source)):
            raise CommandError(f"--reference: `{source}` holds its weights as pickles (pytorch_model.bin); compare "
                               "reads a reference's weights from safetensors only")

    result = load_checked(args.spec, args)
    require_weight_map(result.ir, args.weights_map)
    try:
        problems = config_mismatches(result.ir.params, cfg)
    except HFImportError as e:
        raise CommandError(f"--reference: {e}", e.code) from None
    if problems:
        raise CommandError(f"--reference: `{source}` describes another model than the spec:\n  " + "\n  ".join(problems),
                           EXIT_SPEC)

    backend, ref_mod = import_torch(".backends.torch", ".backends.torch.reference")
    import torch
    from ..ir.spec import Spec
    spec = Spec.checked(result.ir, result.diagnostics)
    name = args.reference_class or _architecture(cfg, family_of)
    try:
        cls, config = ref_mod.reference_class(name), ref_mod.reference_config(cfg)
    except UsageError as e:
        raise CommandError(f"--reference: {e}") from None
    dims = backend.resolve_dims(spec, parse_assignments(args.dims, "--dims"))
    need = 2 * (memory.param_bytes(spec.ir) + memory.forward_bytes(spec.ir, dims, "float32"))
    memory.require(need, f"building `{spec.name}` and its reference", "cpu")

    reference = ref_mod.build_reference(cls, config, weights, args.seed)
    model = backend.build(spec, seed=args.seed).eval()
    _load(model, spec, reference, weights, args.weights_map)
    masks = tuple(n for n in spec.ir.inputs if ref_mod.is_padding_mask(spec, n)) if args.padded else ()
    pairing = ref_mod.pair_inputs(spec, reference.forward, inputs_given, masks)

    inputs = backend.example_inputs(spec, dims=dims, seed=args.seed)
    keep = next((inputs[n].bool() for n in masks if n in pairing.inputs and inputs[n].dim() == 2), None)
    with torch.inference_mode(), ref_mod.quiet():
        ours = model(**{k: inputs[k] for k in pairing.inputs})
        try:
            theirs = ref_mod.tensors_of(reference(**ref_mod.reference_inputs(spec, pairing, inputs)))
        except (RuntimeError, TypeError, ValueError, IndexError) as e:   # its own refusal of these inputs
            raise CommandError(f"transformers' {cls.__name__} fails on the example inputs ("
                               + ", ".join(f"{v} {list(inputs[k].shape)}" for k, v in pairing.inputs.items())
                               + f"): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    ref_mod.pair_outputs(pairing, list(ours), theirs, outputs_given)
    if not pairing.outputs:
        raise CommandError(f"no spec output has a counterpart among the reference's ({', '.join(theirs)}): pair "
                           f"one with --output OURS=THEIRS")
    rows = [ref_mod.compared(k, v, ours[k], theirs[v], args.rtol, keep) for k, v in pairing.outputs.items()]
    _report(spec, cls, source, weights, args, pairing, inputs, rows)
    same = all(r.ok for r in rows)
    if args.generate:
        same = _generated(model, reference, spec, pairing, inputs, args.generate) and same
    return EXIT_OK if same else EXIT_SPEC


def _generated(model, reference, spec, pairing, inputs, new: int) -> bool:
    """Greedy continuations of the example prompts (unpadded), ours through the decoder plan's cache and
    transformers' `generate`: equal token for token, or the first row and position that differ."""
    import torch
    import graphformer
    from ..analysis.decoding import plan_decoder
    plan = plan_decoder(spec.ir)
    if plan.encoder_inputs:
        raise CommandError("--generate: compares decoder-only specs (an encoder–decoder's prompts need their encoder "
                           "inputs paired with the reference's generate, not done yet)")
    if plan.tokens not in pairing.inputs:
        raise CommandError(f"--generate: the token input `{plan.tokens}` has no counterpart in the reference")
    ids = inputs[plan.tokens]
    ours = graphformer.generate(model, ids, new)
    config = reference.generation_config
    config.eos_token_id, config.pad_token_id = None, 0   # every step runs: random weights say nothing of EOS
    from ..backends.torch.reference import quiet
    with torch.inference_mode(), quiet():
        theirs = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False)
    out = sys.stdout
    if ours.shape == theirs.shape and bool((ours == theirs).all()):
        out.write(f"greedy tokens: equal, {new} new tokens after prompts of {ids.shape[1]} in {ids.shape[0]} rows\n")
        return True
    if ours.shape != theirs.shape:
        out.write(f"greedy tokens: {list(ours.shape)} from the spec, {list(theirs.shape)} from the reference\n")
        return False
    row, pos = (ours != theirs).nonzero()[0].tolist()
    out.write(f"greedy tokens DIFFER first at row {row}, new token {pos - ids.shape[1]}:\n"
              f"  ours      {ours[row, ids.shape[1]:].tolist()}\n  reference {theirs[row, ids.shape[1]:].tolist()}\n")
    return False


def _files(list_files, source: str) -> list[str]:
    from ..base.errors import WeightFileError
    try:
        return list_files(source)
    except WeightFileError as e:
        raise CommandError(f"--reference: {e}") from None


def _architecture(cfg: dict, family_of) -> str:
    """The config's first `architectures` entry, else the class our import of its family targets."""
    names = cfg.get("architectures")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    from ..frontend.hf import HFImportError
    try:
        family = family_of(cfg)
    except HFImportError:
        family = None
    if family is not None and family.reference:
        return family.reference
    raise CommandError("--reference: the config names no `architectures`: say which transformers class with "
                       "--reference-class NAME")


def _load(model, spec, reference, weights: str | None, mapping: str) -> None:
    """The reference's tensors into our build through the map: the checkpoint's files as `build --weights`
    reads them, or the random reference's state dict."""
    from ..backends.torch.weights import load_weights
    from ..weights.maps import WeightFileError, WeightMapError, read_state_dict
    try:
        state = read_state_dict(weights) if weights else reference.state_dict()
        load_weights(model, state, mapping, spec)
    except WeightFileError as e:
        raise CommandError(f"--reference: {e}") from None
    except WeightMapError as e:
        raise CommandError(f"weight map `{mapping}`: {e}", EXIT_SPEC) from None


def _report(spec, cls, source, weights, args, pairing, inputs, rows) -> None:
    out = sys.stdout
    how = f"weights of {weights}" if weights else f"random weights (seed {args.seed}) from {source}'s config"
    out.write(f"compare {spec.name} with transformers {cls.__name__} ({how}, through map `{args.weights_map}`)\n")
    fed = ", ".join(f"{k} → {v} {list(inputs[k].shape)}" for k, v in pairing.inputs.items())
    out.write(f"inputs: {fed}" + (f"; left out: {', '.join(pairing.left_out)}" if pairing.left_out else "") + "\n")
    table = [("output", "reference", "shape", "max abs error", "bound", "")]
    for r in rows:
        if r.problem:
            table.append((r.ours, r.theirs, str(list(r.shape)), "—", "—", r.problem))
            continue
        verdict = "ok" if r.ok else f"DIFFERS (largest at {list(r.at)})"
        table.append((r.ours, r.theirs, str(list(r.shape)), f"{r.error:.3g}", f"{r.bound:.3g}", verdict))
    widths = [max(len(row[i]) for row in table) for i in range(6)]
    for row in table:
        out.write("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
    if pairing.unpaired:
        out.write(f"not compared (the reference returns no such field; pair with --output): "
                  f"{', '.join(pairing.unpaired)}\n")
    bad = [r for r in rows if not r.ok]
    where = " at the kept positions" if args.padded else ""
    if bad:
        out.write(f"{len(bad)} of {len(rows)} outputs differ{where}: the spec does not compute what "
                  f"{cls.__name__} does\n")
    else:
        out.write(f"equal{where}: {len(rows)} of {len(rows)} outputs within {args.rtol:g} × max(1, |reference|)\n")
