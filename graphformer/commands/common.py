"""What every subcommand shares: spec arguments, loading with diagnostics, exit codes."""
from __future__ import annotations

import argparse
import os
import sys

from ..base.diagnostics import SourceCache, SpecError, escape_controls, escape_lines, render
from ..base.dims import DimError
from ..base.fileio import Terminated, atomic_output, atomic_path  # noqa: F401 (commands write through them)
from ..frontend.check import CheckResult, check_file
from ..base.errors import UsageError
from .terminal import wants_color

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2


NO_TORCH = "the torch extra is not installed: pip install 'graphformer[torch]'"


def import_torch(*modules: str) -> list:
    """`import torch`, then each module named (relative to graphformer, e.g. ".backends.torch"): without
    torch (or the numpy / safetensors it needs) the command can't run, a usage error with the install line."""
    import importlib
    try:
        import torch  # noqa: F401
        return [importlib.import_module(m, "graphformer") for m in modules]
    except ImportError as e:
        if getattr(e, "name", "") in ("torch", "safetensors", "numpy"):
            raise CommandError(NO_TORCH) from None
        raise


class CommandError(Exception):
    """A failure the user can act on; `code` is the exit status (1: the spec, 2: usage/environment)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, int]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"{flag} expects NAME=INT, got `{item}`")
        try:
            out[key] = int(value.replace("_", ""))
        except ValueError:
            raise UsageError(f"{flag} {key}: `{value}` is not an integer") from None
        if abs(out[key]) > 10**12:
            raise UsageError(f"{flag} {key}: {out[key]} is larger than the limit 10^12")
    return out


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """`--set k=v ...` → {k: text}; the loader converts each text to its param's declared type."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--set expects NAME=VALUE, got `{item}`")
        out[key] = value
    return out


MAX_SEED = 2**64 - 1


def seed_arg(text: str) -> int:
    """`--seed`: an integer in 0 … 2^64 − 1 (torch's range), else argparse's usage error (exit 2)."""
    try:
        seed = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not an integer") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{seed} is outside 0 … 2^64 − 1")
    return seed


def add_spec_args(p: argparse.ArgumentParser, many: bool = False, dims: bool = False) -> None:
    if many:
        p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files (YAML)")
    else:
        p.add_argument("spec", metavar="SPEC", help="spec file (YAML), bundled model name, or a transformers "
                                                    "save_pretrained directory (its config.json imported)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="override params, e.g. --set layers=2 eps=1e-6 act=silu norm_first=true")
    p.add_argument("--preset", help="apply a named preset from the spec (e.g. tiny)")
    if dims:
        p.add_argument("--dims", action="extend", nargs="+", metavar="NAME=INT",
                       help="sizes for symbolic dims, e.g. --dims B=8 n=128")


def load_checked(path: str, args: argparse.Namespace, fmt: str = "text") -> CheckResult:
    """Check a spec, or a transformers save_pretrained directory's config imported on the fly
    (`hf_source`); print its diagnostics; raise CommandError(1) if it has errors."""
    preset, overrides = args.preset, parse_overrides(args.overrides)
    imported = hf_source(path, preset)
    if imported is not None:
        path, overrides = imported[0], {**imported[1], **overrides}   # --set still wins
    result = check_file(path, preset, overrides)
    print_diagnostics(result, fmt)
    if not result.ok:
        raise CommandError("", EXIT_SPEC)
    return result


def hf_source(path: str, preset: str | None = None) -> tuple[str, dict] | None:
    """A save_pretrained directory given where a spec is expected: (its family's bundled spec, the params its
    config.json sets), as `graphformer import hf DIR` would write them, said on stderr; None for anything else.
    The import happens in memory: nothing is written beside the checkpoint."""
    from ..weights.checkpoint import is_hf_directory
    if not isinstance(path, str) or not is_hf_directory(path):
        return None
    if preset is not None:
        raise CommandError(f"--preset {preset}: `{path}` is a checkpoint directory, whose config.json sets the params "
                           f"(change them with --set)")
    from ..frontend.hf import HFImportError, convert_config, read_config, spec_path
    try:
        imported = convert_config(read_config(path))
        spec = str(spec_path(imported.family))
    except HFImportError as e:
        raise CommandError(f"{path}: {e}", e.code) from None
    sys.stderr.write(escape_controls(f"imported {path}: {imported.family.model_type} config, spec "
                                     f"{os.path.basename(spec)} with {len(imported.params)} params read from "
                                     f"config.json (transformers' defaults where it is silent)") + "\n")
    return spec, dict(imported.params)


def default_weights(args: argparse.Namespace) -> None:
    """A checkpoint directory given as the spec is also where the weights are, named by the `hf` map;
    a directory given as --weights is named by the `hf` map too (unless --weights-map says otherwise)."""
    from ..weights.checkpoint import is_hf_directory
    if getattr(args, "weights", None) is None and isinstance(args.spec, str) and is_hf_directory(args.spec):
        args.weights = args.spec
    if args.weights and not args.weights_map and is_hf_directory(args.weights):
        args.weights_map = "hf"


def dims_arg(args: argparse.Namespace, ir) -> dict[str, int]:
    """`--dims NAME=INT...` checked against the spec's symbolic dims; only the names given are returned."""
    given = parse_assignments(getattr(args, "dims", None), "--dims")
    try:
        ir.resolve_dims(given)
    except UsageError as e:
        raise UsageError(f"--dims: {e}") from None
    return given


def require_weight_map(ir, name: str | None) -> None:
    """Naming a weight map the spec doesn't declare is a usage error (exit 2), caught before any work."""
    if name is None or name in ir.weight_maps:
        return
    from ..base.diagnostics import did_you_mean
    known = ", ".join(f"`{m}`" for m in ir.weight_maps) or "none"
    hint = did_you_mean(name, ir.weight_maps)
    raise CommandError(f"--weights-map: spec `{ir.name}` has no weight map `{name}`"
                       + (f" (did you mean `{hint}`?)" if hint else "") + f"; known maps: {known}")


def print_diagnostics(result: CheckResult, fmt: str = "text") -> None:
    if result.diagnostics:
        sys.stderr.write(render(result.diagnostics, "text" if fmt == "json" else fmt, SourceCache(),
                                wants_color(sys.stderr)))


def run_guarded(fn, args) -> int:
    """Run a subcommand: user-caused problems become a message and an exit code, never a traceback."""
    saved = sys.stdout
    sys.stdout = _Stdout(saved)
    try:
        code = fn(args)
        sys.stdout.flush()
        return code
    except CommandError as e:
        if str(e):
            sys.stderr.write(f"graphformer: error: {escape_lines(str(e))}\n")
        return e.code
    except UsageError as e:
        sys.stderr.write(f"graphformer: error: {escape_lines(str(e))}\n")
        return EXIT_USAGE
    except SpecError as e:   # an analysis's refusal a command did not catch itself (GF256 from `summary --mesh`)
        sys.stderr.write(render(e.diagnostics, "text", SourceCache(), wants_color(sys.stderr)))
        return EXIT_SPEC
    except DimError as e:   # counts are exact integers up to 10^18: `--set d_model=1000000008` overflows them
        where = f"{args.spec}: " if isinstance(getattr(args, "spec", None), str) else ""
        sys.stderr.write("graphformer: error: " + escape_controls(f"{where}the model is too large to count at "
                                                                 f"these sizes: {e}") + "\n")
        return EXIT_SPEC
    except KeyboardInterrupt:
        sys.stderr.write("graphformer: interrupted\n")
        return 130
    except Terminated:
        sys.stderr.write("graphformer: terminated\n")
        return 143
    except BrokenPipeError:  # `graphformer ... | head`: the reader has all it wanted
        _silence(saved)
        return EXIT_OK
    except StdoutError as e:
        _silence(saved)
        sys.stderr.write(f"graphformer: error: cannot write to stdout: {e}\n")
        return EXIT_USAGE
    finally:
        sys.stdout = saved


class StdoutError(Exception):
    """Standard output is closed or failing (`>&-`, `>/dev/full`): an environment problem, exit 2."""


class _Stdout:
    """sys.stdout for the length of a command: a closed or failing stream becomes StdoutError."""

    def __init__(self, stream):
        self._stream = stream

    def _call(self, target, method: str, *a):
        if target is None:
            raise StdoutError("it is closed")
        try:
            return getattr(target, method)(*a)
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as e:  # ValueError: I/O on a closed file
            raise StdoutError((getattr(e, "strerror", None) or str(e)).lower()) from None

    def write(self, text):
        return self._call(self._stream, "write", text)

    def flush(self):
        return None if self._stream is None else self._call(self._stream, "flush")

    @property
    def buffer(self):
        return _Stdout(getattr(self._stream, "buffer", None))

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _silence(stream) -> None:
    """Point fd 1 at /dev/null so that the interpreter's own flush at exit doesn't fail a second time."""
    try:
        if stream is not None and stream.fileno() == 1:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def check_checkpoint_config(params: dict, weights: str | None, mapping: str | None) -> None:
    """A save_pretrained directory read through the `hf` map: its config.json must describe the spec in
    the knobs the tensors can't show (activation, eps, heads, ...), or it would load and compute
    something else without a word (docs/huggingface.md)."""
    from ..weights.checkpoint import is_hf_directory
    if not weights or mapping != "hf" or not is_hf_directory(weights):
        return
    from ..frontend.hf import HFImportError, config_mismatches, read_config
    try:
        problems = config_mismatches(params, read_config(weights))
    except HFImportError as e:
        raise CommandError(f"--weights: {e}", e.code) from None
    if problems:
        raise CommandError(f"--weights: `{weights}`'s config.json describes another model than the spec:\n  "
                           + "\n  ".join(problems) + f"\nset the spec's params to the config's (--set), or import it: "
                           f"graphformer import hf {weights} -o spec.yaml", EXIT_SPEC)
