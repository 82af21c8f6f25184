"""`graphformer export SPEC -o FILE.onnx`: ONNX straight from the IR, with the spec's names and dims."""
from __future__ import annotations

import json
import os
import sys
import time

from ..base.diagnostics import SpecError
from .progress import add_quiet
from .common import (EXIT_OK, EXIT_SPEC, CommandError, add_spec_args, check_checkpoint_config, default_weights,
                     atomic_output, load_checked, print_diagnostics, require_weight_map, seed_arg)

NO_ONNX = "the onnx extra is not installed: pip install 'graphformer[onnx]'"


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX (symbolic dims become named dynamic axes)",
                       description="Lower the spec to an ONNX model, op by op (no tracing). Graph inputs and "
                                   "outputs keep the spec's names, symbolic dims become named dynamic axes, "
                                   "initializers are named by state-dict key. Weights come from --weights, "
                                   "else from the torch backend's seeded init. Exit 0 ok, 1 spec error, "
                                   "2 usage or environment.")
    add_spec_args(p)
    add_quiet(p)
    p.add_argument("--weights", metavar="FILE",
                   help="weights to export (.safetensors or a save_pretrained directory; .pt/.bin need torch): "
                        "the spec's own state dict, or "
                        "a reference's through --weights-map")
    p.add_argument("--weights-map", metavar="NAME", help="the spec's weight map that names FILE's tensors (e.g. hf)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the init when no --weights is given (default 0)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17, the first with LayerNormalization)")
    p.add_argument("--with-past", action="store_true",
                   help="export a causal decoder's step: inputs input_ids, attention_mask, position_ids and "
                        "past_key_values.{i}.key/value, outputs logits and present.{i}.key/value (the "
                        "optimum / onnxruntime-genai convention; docs/onnx.md). An encoder-decoder (T5, Whisper) "
                        "becomes encoder_model.onnx, decoder_model.onnx and decoder_with_past_model.onnx in the "
                        "directory -o names, as optimum's seq2seq classes load them")
    p.add_argument("--inputs", metavar="NAME[,NAME...]", action="append",
                   help="the optional or defaulted spec inputs the model takes besides the required ones (e.g. "
                        "mask,positions). Default: the defaulted ones (BERT's token_type_ids), no optional one. "
                        "The model computes what the spec computes without those left out (a defaulted one is "
                        "its constant, built in the graph): ONNX has no way to leave out a graph input at run time")
    p.add_argument("--custom-ops", action="store_true",
                   help="write a plugin op that has no ONNX lowering as a node of the plugin's own ONNX domain "
                        "(a runtime needs the plugin's kernel) instead of refusing it (GF254)")
    p.add_argument("-o", "--output", metavar="FILE.onnx|DIR/", required=True,
                   help="where to write the model; a directory (an existing one, or a name ending in /) gets "
                        "model.onnx. With --with-past, genai_config.json (onnxruntime-genai) goes beside it, and "
                        "from a checkpoint directory its config.json, generation_config.json and tokenizer files "
                        "too, so optimum and onnxruntime-genai load the directory as it is")


def run(args) -> int:
    default_weights(args)   # a save_pretrained directory: its weights, named by the spec's transformers map
    if args.weights_map and not args.weights:
        raise CommandError("--weights-map needs --weights FILE: the map says how FILE's names fit the spec")
    # absent: the backend's default (the required inputs and the defaulted ones some node reads)
    inputs = None if args.inputs is None else [k.strip() for arg in args.inputs for k in arg.split(",")]
    if args.inputs is not None and not all(inputs):
        raise CommandError("--inputs: give the names of the spec's optional or defaulted inputs, separated by "
                           "commas")
    if inputs and args.with_past:
        raise CommandError("--inputs and --with-past: a decoder step's inputs are fixed (input_ids, "
                           "attention_mask, position_ids, past_key_values.*)")
    try:
        import onnx  # noqa: F401
        from ..backends import onnx as backend
    except ImportError as e:
        if getattr(e, "name", "") in ("onnx", "numpy"):
            raise CommandError(NO_ONNX) from None
        raise
    backend.check_opset(args.opset)
    result = load_checked(args.spec, args)
    require_weight_map(result.ir, args.weights_map)
    check_checkpoint_config(result.ir.params, args.weights, args.weights_map)
    from ..ir.spec import Spec
    spec = Spec.checked(result.ir, result.diagnostics)
    map_errors: tuple = ()
    if args.weights_map:
        try:
            from ..weights.maps import WeightMapError
            map_errors = (WeightMapError,)
        except ImportError:  # no torch: weight maps are unavailable, and export_onnx says so
            pass
    from ..backends.onnx import seq2seq
    stages = args.with_past and seq2seq.is_encoder_decoder(spec.ir)   # three graphs, as optimum loads them
    try:  # before the weights: a node this opset can't express, or a spec that is no decoder, fails fast
        backend.check_exact(spec, args.opset, args.custom_ops)
        if stages:
            seq2seq.plan(spec.ir)
        elif args.with_past:
            backend.plan_past(spec)
    except SpecError as e:
        print_diagnostics(e, "text")
        raise CommandError("", EXIT_SPEC) from None
    if stages:
        return _export_stages(args, spec, backend, map_errors)
    try:   # an unknown name fails before the weights are read
        backend.exported_ir(spec, inputs, args.with_past)
    except backend.ExportError as e:
        raise CommandError(f"--inputs: {e}") from None
    args.output = _output_file(args.output)
    t0 = time.perf_counter()
    try:
        written = backend.export_onnx(spec, args.weights, args.output, opset=args.opset, seed=args.seed,
                                      weights_map=args.weights_map, with_past=args.with_past, inputs=inputs,
                                      custom_ops=args.custom_ops)
    except map_errors as e:
        raise CommandError(f"--weights-map {args.weights_map}: {e}", EXIT_SPEC) from None
    elapsed = time.perf_counter() - t0
    data = f" + {written.data_bytes / 1e6:.1f} MB of weights in {written.data_path}" if written.data_path else ""
    past = " with past keys and values" if args.with_past else ""
    sys.stderr.write(f"wrote {written.path}{past} ({written.bytes / 1e6:.1f} MB{data}): opset {args.opset}, "
                     f"{written.nodes} nodes, {written.params:,} parameters, in {elapsed:.2f} s\n")
    if args.with_past:
        _companions(args, spec)
    taken = inputs or ()
    left_out = [k for k, v in spec.ir.inputs.items() if spec.ir.node(v).meta.get("optional") and k not in taken]
    if left_out and not args.with_past:
        sys.stderr.write(f"optional inputs left out: {', '.join(left_out)} (--inputs {','.join(left_out)} "
                         f"includes them)\n")
    filled = [k for k, v in spec.ir.inputs.items() if spec.ir.node(v).meta.get("default") is not None
              and k not in taken and spec.ir.consumers(v)]
    if filled and inputs is not None and not args.with_past:
        sys.stderr.write(f"inputs built from their defaults: {', '.join(filled)} (--inputs {','.join(filled)} "
                         f"makes them graph inputs)\n")
    return EXIT_OK


def _export_stages(args, spec, backend, map_errors) -> int:
    """An encoder–decoder with past: the encoder and the decoder's two steps into the directory -o names."""
    out = args.output
    if out.endswith(".onnx") and not os.path.isdir(out):
        raise CommandError(f"-o {out}: an encoder–decoder with past keys and values is three graphs "
                           "(encoder_model.onnx, decoder_model.onnx, decoder_with_past_model.onnx): give a directory, "
                           "-o DIR/")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise CommandError(f"-o: cannot make directory `{out}`: {e.strerror or e}") from None
    t0 = time.perf_counter()
    try:
        written = backend.export_seq2seq(spec, args.weights, out, opset=args.opset, seed=args.seed,
                                         weights_map=args.weights_map)
    except map_errors as e:
        raise CommandError(f"--weights-map {args.weights_map}: {e}", EXIT_SPEC) from None
    elapsed = time.perf_counter() - t0
    for w in written:
        data = f" + {w.data_bytes / 1e6:.1f} MB of weights in {w.data_path}" if w.data_path else ""
        sys.stderr.write(f"wrote {w.path} ({w.bytes / 1e6:.1f} MB{data}): {w.nodes} nodes, {w.params:,} parameters\n")
    sys.stderr.write(f"an encoder–decoder with past keys and values, opset {args.opset}, in {elapsed:.2f} s\n")
    args.output = written[0].path
    _companions(args, spec, genai=False)
    return EXIT_OK


MODEL_FILE = "model.onnx"
# what optimum and onnxruntime-genai read beside the model, copied from a checkpoint directory when present
CHECKPOINT_FILES = {"config.json": "config", "generation_config.json": "config", "tokenizer.json": "tokenizer",
                    "tokenizer_config.json": "config", "special_tokens_map.json": "config",
                    "added_tokens.json": "config", "vocab.json": "tokenizer", "merges.txt": "tokenizer",
                    "tokenizer.model": "tokenizer", "spiece.model": "tokenizer",
                    "preprocessor_config.json": "config"}


def _output_file(output: str) -> str:
    """-o DIR/ (or an existing directory): DIR/model.onnx, the directory made if it is missing."""
    if not (output.endswith(("/", os.sep)) or os.path.isdir(output)):
        return output
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise CommandError(f"-o: cannot make directory `{output}`: {e.strerror or e}") from None
    return os.path.join(output, MODEL_FILE)


def _checkpoint_dir(args) -> str | None:
    from ..weights.checkpoint import is_hf_directory
    return next((d for d in (args.spec, args.weights) if isinstance(d, str) and is_hf_directory(d)), None)


def _companions(args, spec, genai: bool = True) -> None:
    """genai_config.json beside a decoder step (`genai`), and the checkpoint's own files that runtimes read."""
    from ..backends.onnx import plan_past
    from ..backends.onnx.genai import FILENAME, GenaiUnsupported, genai_config
    from ..base.reading import FileProblem, inside, read_input, read_json
    directory = os.path.dirname(os.path.abspath(args.output))
    source = _checkpoint_dir(args)
    found: dict[str, bytes] = {}
    configs: dict[str, dict | None] = {"config.json": None, "generation_config.json": None}
    for name, kind in CHECKPOINT_FILES.items() if source else ():
        if not os.path.lexists(os.path.join(source, name)):
            continue
        try:   # confined to the checkpoint directory, bounded, regular files only
            path = inside(source, name)
            found[name] = read_input(path, kind)
            if name in configs:
                configs[name] = read_json(path, kind)
        except FileProblem as e:
            raise CommandError(f"{source}: {e}") from None
    if source and os.path.realpath(source) == os.path.realpath(directory):
        found = {}   # exported into the checkpoint directory itself: its files are there already
    if not genai:   # an encoder–decoder: optimum reads config.json, which only a checkpoint directory has
        if not source:
            sys.stderr.write("note: optimum loads the directory with the checkpoint's config.json beside the graphs: "
                             "export from a transformers directory (graphformer export DIR --with-past) to copy it\n")
    else:
        try:
            text = genai_config(plan_past(spec), spec.ir, os.path.basename(args.output),
                                *(c if isinstance(c, dict) else None for c in configs.values()))
        except GenaiUnsupported as e:
            sys.stderr.write(f"note: no {FILENAME}: {e}\n")
        else:
            found[FILENAME] = (json.dumps(text, indent=2) + "\n").encode()
    for name, data in found.items():
        with atomic_output(os.path.join(directory, name)) as fh:
            fh.write(data)
    if found:
        sys.stderr.write(f"wrote beside it: {', '.join(found)}\n")
