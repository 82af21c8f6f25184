"""The built model: a tree of `Block`s mirroring the spec's scopes, each running generated code.

Module paths are IR paths: the node `blocks.3.attn` is `model["blocks"][3]["attn"]`, so its
parameters are `blocks.3.attn.q.weight` in the state dict. Repetitions of a block are items of an
nn.ModuleList (one repetition = one submodule: the unit FSDP or activation checkpointing wraps).
"""
from __future__ import annotations

import torch
from torch import nn

from ...ir.defaults import default_of, fill, required_shapes
from . import plan as _plan
from .core import forward_tables
from .inputs import filled


class Block(nn.ModuleDict):
    """One scope: its nodes' modules and child blocks by name; `forward(*inputs) -> tuple of outputs`.

    Node names may clash with nn.Module attributes (`type`, `float`, `train`): children are stored in
    `_modules` directly, which is all that state dicts, `named_modules` and `[...]` use.
    """

    def __init__(self, path: str = ""):
        super().__init__()
        self.path = path
        self._src = ("", "")          # (training, eval) generated source
        self._run_train = self._run_eval = None

    def put(self, key: str, module: nn.Module) -> None:
        self._modules[key] = module

    def set_code(self, train_src: str, eval_src: str) -> None:
        self._src = (train_src, eval_src)
        self._run_train, self._run_eval = _plan.compile_run(train_src), _plan.compile_run(eval_src)

    @property
    def code(self) -> str:
        """The generated forward of this block in the current mode (training or eval)."""
        return self._src[0] if self.training else self._src[1]

    def forward(self, *inputs):
        return (self._run_train if self.training else self._run_eval)(self._modules, *inputs)

    # generated functions are rebuilt from their source, so the module pickles and deep-copies
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_run_train"] = state["_run_eval"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if self._src[0]:
            self.set_code(*self._src)


class GraphModule(Block):
    """The whole spec: `forward(**inputs)` by spec input name → dict keyed by the spec's outputs."""

    def __init__(self, spec):
        super().__init__("")
        self.spec = spec
        self.input_names = tuple(spec.ir.inputs)
        self.output_names = tuple(spec.ir.outputs)
        self._input_set = frozenset(self.input_names)
        self._required = frozenset(required_shapes(spec.ir))
        self._fills = {k: fill(spec.ir, k) for k in spec.ir.inputs if default_of(spec.ir, k) is not None}
        self._leaf_keys: dict[str, tuple[str, ...]] = {}

    def forward(self, *args, **inputs):
        if args:  # positional in spec input order, as exporters and wrappers call modules
            inputs.update(zip(self.input_names, args))
        if not self._required <= inputs.keys() <= self._input_set:
            raise TypeError(self._input_problem(len(args), inputs))
        self.fill_defaults(inputs)
        run = self._run_train if self.training else self._run_eval
        args = [inputs.get(k) for k in self.input_names]   # an omitted optional: None
        if torch.compiler.is_compiling():   # the compiler shares equal subexpressions itself
            return run(self._modules, *args)
        with forward_tables():
            return run(self._modules, *args)

    def fill_defaults(self, inputs: dict, only=None) -> None:
        """Each input with a `default` (of those named in `only`, default all) left out of `inputs` or None (as
        transformers takes token_type_ids): its constant, at the shape the given inputs' shapes say."""
        for k, f in self._fills.items():
            if inputs.get(k) is None and (only is None or k in only):
                inputs[k] = filled(f, inputs)

    def _input_problem(self, n_args: int, inputs: dict) -> str:
        want = ", ".join(self.input_names)
        if n_args > len(self.input_names):
            return f"{self.spec.name} takes {len(self.input_names)} inputs ({want}), got {n_args} positional"
        missing = [k for k in self.input_names if k not in inputs and k in self._required]
        extra = [k for k in inputs if k not in self._input_set]
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(extra)}"] if extra else [])
        return f"{self.spec.name} takes inputs ({want}): {'; '.join(parts)}"

    def relink_shared(self) -> None:
        """Make every node of a sharing repetition (`share`) use its owner's Parameter objects again (after
        building, and after anything that replaced parameters module by module, as tensor parallelism)."""
        for name, owner in getattr(self, "_shared", {}).items():
            mine, theirs = self.node_module(name), self.node_module(owner)
            for m, o in zip(mine.modules(), theirs.modules()):
                for k in m._parameters:
                    m._parameters[k] = o._parameters[k]

    def node_module(self, name: str) -> nn.Module:
        """The module computing IR node `name` (e.g. `blocks.3.attn`)."""
        m: nn.Module = self
        for k in self._leaf_keys[name]:
            m = m._modules[k]
        return m

    def trace_shapes(self, **inputs) -> dict[str, tuple[int, ...]]:
        """Run the graph node by node (slow path) and return every node's runtime shape.

        Used by the build self-check and tests; the fast path (`forward`) never records anything.
        """
        ir = self.spec.ir
        self.fill_defaults(inputs)
        values = {v: inputs.get(k) for k, v in ir.inputs.items()}
        shapes = {name: tuple(v.shape) for name, v in values.items() if v is not None}
        for n in ir.nodes():
            if n.op == "input":
                continue
            if any(values[n.inputs[p]] is None for p in n.meta.get("optional_ports", ())):
                values[n.name] = None   # computed from an optional input that was not given
                continue
            try:
                args, kwargs = _plan.split_args(n, [values[s] for s in n.inputs.values()])
                y = self.node_module(n.name)(*args, **kwargs)
            except Exception as e:
                raise RuntimeError(f"while executing `{n.name}` ({n.op}): {e}") from e
            values[n.name] = y
            shapes[n.name] = tuple(y.shape)
        return shapes
