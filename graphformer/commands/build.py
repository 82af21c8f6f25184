"""`graphformer build SPEC`: compile to a torch module, run it once, check every shape, save weights.

The self-check runs the graph node by node on example inputs and compares each node's runtime shape
with the checker's inferred shape at the same dims; a disagreement is a bug in graphformer (a shape
rule or a lowering), reported as an internal error (exit 3) naming the node.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

from ..analysis import memory
from ..weights.checkpoint import is_hf_directory
from ..base.diagnostics import SourceCache, render
from .terminal import wants_color
from ..base.dtypes import dtype_arg
from ..base.fileio import resolve_output
from ..frontend.infer import at_dims, infer
from .progress import add_quiet
from .common import (EXIT_OK, EXIT_SPEC, CommandError, add_spec_args, atomic_output, check_checkpoint_config, import_torch,
                     default_weights, load_checked, parse_assignments, parse_overrides, require_weight_map, seed_arg)

EXIT_INTERNAL = 3


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="build a torch module, run it once and check every shape",
                       description="Build the spec as a torch.nn.Module, run one forward pass on example inputs "
                                   "(not on meta), check every node's runtime shape against the checker, and "
                                   "print parameters, output shapes and timings. Exit 0 ok, 1 spec error, "
                                   "2 usage or environment, 3 internal error.")
    add_spec_args(p, dims=True)
    add_quiet(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or meta (meta allocates nothing)")
    p.add_argument("--dtype", type=dtype_arg, default="float32",
                   help="float32 (default), bfloat16 or float16 (aliases fp32, bf16, fp16)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the parameter init (default 0)")
    p.add_argument("--weights", metavar="FILE|DIR", help="load weights (.safetensors, .pt, .bin, or a "
                        "save_pretrained directory) through --weights-map (default hf for a directory; none: "
                        "the spec's own names, as -o writes them)")
    p.add_argument("--weights-map", metavar="NAME", help="the spec's weight map that names FILE's tensors (e.g. hf)")
    p.add_argument("-o", "--output", metavar="FILE.safetensors|DIR", help="write the state dict as safetensors "
                   "in the spec's names; with --save-map, a checkpoint directory in the map's names")
    p.add_argument("--save-map", metavar="NAME", help="write -o DIR in weight map NAME's names and shapes (the "
                   "reference's, e.g. hf: model.safetensors, sharded above --max-shard-size, and config.json: the "
                   "checkpoint directory's given as SPEC or --weights, else written from the spec's params), so "
                   "that its from_pretrained loads it")
    p.add_argument("--max-shard-size", metavar="SIZE", type=size_arg, default=DEFAULT_SHARD,
                   help="with --save-map: the largest weights file, e.g. 500MB, 2GiB (default 5GB, as save_pretrained)")


def run(args) -> int:
    default_weights(args)   # a save_pretrained directory: its weights, named by the spec's transformers map
    result = load_checked(args.spec, args)
    if args.weights_map and not args.weights:
        raise CommandError("--weights-map names the tensors of --weights FILE|DIR: give the weights too")
    require_weight_map(result.ir, args.weights_map)
    from ..ir.spec import Spec
    spec = Spec.checked(result.ir, result.diagnostics)
    config = None
    if args.save_map is not None:   # before anything is built (or torch imported): these are the spec's errors
        _check_save_map(result.ir, args)
        config = _config_to_copy(args, spec)
    (backend,) = import_torch(".backends.torch")
    dims = backend.resolve_dims(spec, parse_assignments(args.dims, "--dims"))
    device = backend.resolve_device(args.device)
    meta = device.type == "meta"
    if args.output and meta:
        raise CommandError("-o: a model on the meta device has no weights to write (use --device cpu)")
    if args.output and args.save_map is None:
        resolve_output(args.output)  # a missing directory or a device: say so before the slow part
    if not meta:
        _check_dims(spec, dims, args.spec)

    # counted on every device, meta included: sizes past exact counting stop here (DimError, exit 1).
    # Created in float32, then cast to --dtype for the forward.
    built = memory.param_bytes(spec.ir)
    if not meta:  # a batch that can't fit is refused before the model is built, not after
        at = ", ".join(f"{k}={v}" for k, v in dims.items()) or "its sizes"
        running = memory.param_bytes(spec.ir, args.dtype) + memory.forward_bytes(spec.ir, dims, args.dtype)
        memory.require(max(built, running), f"building `{spec.name}` and running it at {at}", str(device))
    t0 = time.perf_counter()
    try:
        model = backend.build(spec, device=device, dtype=args.dtype, seed=args.seed)
    except (MemoryError, RuntimeError) as e:
        _raise_if_out_of_memory(e, "building the model")
        raise
    t_build = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    out = sys.stdout
    out.write(f"{spec.name}: {n_params:,} parameters ({device}, {args.dtype}), built in {_secs(t_build)}\n")
    if args.weights:
        _load_weights(model, spec, args, device)
        out.write(f"loaded {args.weights} " + (f"through weight map `{args.weights_map}`\n" if args.weights_map
                                               else "in the spec's own names\n"))

    dim_text = ", ".join(f"{k}={v}" for k, v in dims.items())
    if meta:
        out.write(f"no forward pass on meta; output shapes at {dim_text or 'no dims'}:\n")
        for name, t in spec.outputs.items():
            out.write(f"  {name}  {[d.evaluate(dims) for d in t.shape]}  {t.dtype}\n")
        return EXIT_OK
    outputs, t_fwd, n_checked = _run_and_check(model, spec, dims, device, backend.resolve_dtype(args.dtype))
    out.write(f"forward at {dim_text or 'no dims'}: {_secs(t_fwd)}; runtime shapes match the checker "
              f"at all {n_checked} nodes\n")
    for name, y in outputs.items():
        out.write(f"  {name}  {list(y.shape)}  {str(y.dtype).removeprefix('torch.')}\n")
    if args.output and args.save_map is not None:
        _save_mapped(model, spec, args, config)
    elif args.output:
        size = _save(model, spec, args.output)
        out.write(f"wrote {args.output} ({len(model.state_dict())} tensors, {size / 1e6:.1f} MB)\n")
    return EXIT_OK


def _raise_if_out_of_memory(e: BaseException, what: str) -> None:
    """Running out of memory is the environment's limit (exit 2), not an internal error."""
    if memory.is_out_of_memory(e):
        raise CommandError(f"out of memory during {what}: {str(e).splitlines()[0] if str(e) else 'MemoryError'}; "
                           "use a smaller preset or --dims") from None


def _secs(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def _check_dims(spec, dims: dict[str, int], path: str) -> None:
    """Re-infer every shape at the concrete dims, so `--dims n=600` on a 512-position model is a usage
    error with the checker's message rather than a torch traceback."""
    errors = [d for d in infer(at_dims(spec.ir, dims)) if d.is_error]
    if errors:
        sys.stderr.write(render(errors[:1], "text", SourceCache()))
        raise CommandError(f"--dims {', '.join(f'{k}={v}' for k, v in dims.items())}: {path} does not hold at these "
                           f"sizes (see above)")


def _run_and_check(model, spec, dims, device, dtype):
    import torch
    import graphformer.backends.torch as backend
    inputs = backend.example_inputs(spec, dims=dims, seed=0, device=device, dtype=dtype)
    model.eval()
    with torch.inference_mode():
        try:
            shapes = model.trace_shapes(**inputs)
        except (MemoryError, RuntimeError) as e:
            _raise_if_out_of_memory(e, "the forward pass")
            raise CommandError(f"internal error: {e}", EXIT_INTERNAL) from None
        for node in spec.ir.nodes():
            want = tuple(d.evaluate(dims) for d in node.shape.shape)
            if shapes[node.name] != want:
                raise CommandError(f"internal error: node `{node.name}` ({node.op}) produced shape "
                                   f"{list(shapes[node.name])} but the checker inferred {node.shape} = {list(want)} "
                                   f"at {dims}", EXIT_INTERNAL)
        t = time.perf_counter()
        try:
            outputs = model(**inputs)
        except (MemoryError, RuntimeError) as e:  # the node-by-node walk ran, so this is the plan's fault
            _raise_if_out_of_memory(e, "the forward pass")
            raise CommandError(f"internal error in the generated forward: {e}", EXIT_INTERNAL) from None
        if device.type == "cuda":
            torch.cuda.synchronize()
        return outputs, time.perf_counter() - t, len(shapes)


def _load_weights(model, spec, args, device) -> None:
    path, mapping = args.weights, args.weights_map
    if device.type == "meta":
        raise CommandError("--weights: cannot load weights into a meta model (use --device cpu)")
    from ..backends.torch.weights import load_weights, shape_stubs
    from ..weights.maps import WeightFileError, WeightMapError, read_state_dict
    try:
        state = read_state_dict(path)
    except WeightFileError as e:
        raise CommandError(f"--weights: {e}") from None
    if mapping is None:   # the spec's own names (what `build -o` and a training loop's state_dict write)
        _load_own(model, spec, state, path)
        return
    try:
        load_weights(model, state, mapping, spec)
    except WeightMapError as e:
        hint = _fit_hint(spec, shape_stubs(state), args, e.problems)   # tried on shapes: nothing read
        raise CommandError(f"--weights: {e}{hint}", EXIT_SPEC) from None
    check_checkpoint_config(spec.params, path, mapping)   # after the sizes: their hint is the first to act on


def _load_own(model, spec, state, path: str) -> None:
    """Weights in the spec's parameter names: exactly the spec's tensors, or exit 1 naming what differs."""
    import torch
    from ..weights.maps import check_shapes
    problems = check_shapes(spec, state)
    if problems:
        raise CommandError(f"--weights: `{path}` does not hold spec `{spec.name}`'s parameters (a reference's "
                           f"checkpoint? name its map with --weights-map): " + "; ".join(problems), EXIT_SPEC)
    own = model.state_dict()
    with torch.no_grad():
        for k in own:
            own[k].copy_(torch.as_tensor(state[k]))


def _fit_hint(spec, state, args, problems) -> str:
    """The params the tensors determine, when sizes disagree (graphformer/weights/fit.py)."""
    from ..frontend.api import load
    from ..weights.maps import WeightMapError, convert_state_dict
    from ..weights.fit import suggestion

    def fits(candidate) -> bool:
        try:
            convert_state_dict(candidate, state, args.weights_map)
            return True
        except WeightMapError:
            return False
    hint = suggestion(lambda found: load(args.spec, args.preset, {**parse_overrides(args.overrides), **found}),
                      spec.params, problems, fits)
    if hint and is_hf_directory(args.weights):
        hint += f"; or import its config: graphformer import hf {args.weights} -o spec.yaml"
    return hint


def _save(model, spec, path: str) -> int:
    from ..backends.torch.weights import save_safetensors
    # the tensors stream into the temporary file: no copy of the whole file in memory (serialising to
    # bytes first peaked at 3x the model's size)
    with atomic_output(path) as fh:
        save_safetensors(model, fh, {"graphformer_spec": spec.name, "format": "pt"})
    return os.path.getsize(path)


# ---------------------------------------------------------------- --save-map: a checkpoint in a reference's names

DEFAULT_SHARD = 5 * 10**9
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def size_arg(text: str) -> int:
    """`--max-shard-size`: bytes, or a number with a unit (KB, MB, GB: powers of 10; KiB, MiB, GiB: of 2)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m and _UNITS.get(m.group(2).lower())
    if not unit or not 1 <= float(m.group(1)) * unit <= 2**62:
        raise argparse.ArgumentTypeError(f"`{text}` is not a size (e.g. 500MB, 5GB, 2GiB)")
    return int(float(m.group(1)) * unit)


def _check_save_map(ir, args) -> None:
    """--save-map needs -o and a map that exists; a rule the writer can't invert is GF301 at its line."""
    from ..base.diagnostics import Diagnostic
    from ..weights.maps import unwritable_rules
    if not args.output:
        raise CommandError("--save-map writes a checkpoint directory: give it with -o DIR")
    if args.save_map not in ir.weight_maps:
        require_weight_map(ir, args.save_map)
    problems = [Diagnostic("GF301", f"weight map `{args.save_map}` can't write this rule's tensor back: {why}",
                           rule.span, help="`stored_shape: [...]` (dims over params) says the shape the reference "
                                           "stores; docs/weight-maps.md")
                for rule, why in unwritable_rules(ir.weight_maps[args.save_map])]
    if problems:
        sys.stderr.write(render(problems, "text", SourceCache(), wants_color(sys.stderr)))
        raise CommandError("", EXIT_SPEC)


def _config_to_copy(args, spec) -> bytes | None:
    """The config.json of the checkpoint directory given as SPEC or --weights (read bounded, as data), once it is
    known to describe the spec: its import gives the spec's params, so `from_pretrained` builds the model the
    weights belong to. None when there is none (a note says so)."""
    from ..weights.checkpoint import is_hf_directory
    source = next((d for d in (args.spec, args.weights) if isinstance(d, str) and is_hf_directory(d)), None)
    if source is None:
        return _config_to_write(args, spec)
    from ..base.reading import FileProblem, inside, read_input
    from ..frontend.hf import HFImportError, convert_config, read_config
    try:
        data = read_input(inside(source, "config.json"), "config")
        imported = convert_config(read_config(source))
    except FileProblem as e:
        raise CommandError(f"{source}: {e}") from None
    except HFImportError as e:
        raise CommandError(f"{source}: {e}", e.code) from None
    differ = [f"`{k}`: config {v!r}, spec {spec.params.get(k)!r}" for k, v in imported.params.items()
              if not _same_param(v, spec.params.get(k))]
    if differ:
        raise CommandError(f"--save-map: `{source}/config.json` describes another model than the spec (changed with "
                           f"--set?): " + "; ".join(differ[:6]) + "; from_pretrained would build that model, so "
                           "the config is not copied: write to a new directory without it, or drop the --set",
                           EXIT_SPEC)
    return data


def _config_to_write(args, spec) -> bytes | None:
    """config.json for map `hf` of a bundled family's spec, written from its params (frontend/hf_export.py) and
    checked by importing it back; a param no such config says is GF314-GF316 (exit 1, before anything is built).
    None, with a note, for a spec of no importable family or another map."""
    import json
    from ..base.diagnostics import Diagnostic
    from ..frontend.hf_export import HFExportError, export_config
    exported = None
    if args.save_map == "hf":
        try:
            exported = export_config(spec.name, dict(spec.params), spec.ir.param_origin)
        except HFExportError as e:
            problem = Diagnostic(e.code, f"--save-map hf: {e}", help="drop that --set, or write the weights "
                                 "alone with another map; docs/huggingface.md \"Back to transformers\"")
            sys.stderr.write(render([problem], "text", SourceCache(), wants_color(sys.stderr)))
            raise CommandError("", EXIT_SPEC) from None
    if exported is None:
        sys.stderr.write(f"note: no config.json written: spec `{spec.name}` is no family `graphformer import hf` "
                         "reads (give a transformers checkpoint directory as SPEC or --weights to copy its config; "
                         "from_pretrained needs one beside the weights)\n")
        return None
    config = {**exported.config, "dtype": str(args.dtype)}   # the tensors' dtype: from_pretrained's "auto" reads it
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def _same_param(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_param(x, y) for x, y in zip(a, b))
    return a == b


def _save_mapped(model, spec, args, config: bytes | None) -> None:
    from ..backends.torch.weights import write_checkpoint
    from ..weights.maps import WeightMapError, to_reference
    try:
        tensors = to_reference(spec, {k: v.detach() for k, v in model.state_dict().items()}, args.save_map)
    except WeightMapError as e:
        raise CommandError(f"--save-map: {e}", EXIT_SPEC) from None
    meta = {"format": "pt", "graphformer_spec": spec.name, "weight_map": args.save_map}
    names = write_checkpoint(tensors, args.output, meta, args.max_shard_size,
                             {"config.json": config} if config is not None else None)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    shards = [n for n in names if n.endswith(".safetensors")]
    files = [n for n in names if n not in shards] + ([f"{len(shards)} shards"] if len(shards) > 1 else shards)
    sys.stdout.write(f"wrote {args.output}/ in map `{args.save_map}`'s names: {', '.join(files)} ({len(tensors)} "
                     f"tensors, {size / 1e6:.1f} MB)\n")
