"""`build(spec)`: the IR → a GraphModule on cpu, cuda or meta, initialised from a seed."""
from __future__ import annotations

import torch
from torch import nn

from ...analysis import memory
from ...base.errors import UsageError
from ...base.progress import track
from . import plan as _plan
from .lower import LOWERINGS
from .module import Block, GraphModule
from ...base.dtypes import canonical_dtype

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INIT_STD = 0.02  # GPT-2 / BERT: normal(0, 0.02) for every weight matrix and embedding table


def resolve_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device `{device}` (use cpu, cuda, cuda:N or meta)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("device `cuda` requested but no CUDA GPU is available "
                             "(this torch " + ("is a CPU-only build" if torch.version.cuda is None
                                               else "sees no device") + "); use --device cpu or meta")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device `{dev}` does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "meta"):
        raise UsageError(f"unsupported device `{device}` (use cpu, cuda or meta)")
    return dev


def resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    dtype = canonical_dtype(dtype)   # bf16, fp16, fp32
    if dtype not in DTYPES:
        raise UsageError(f"unsupported dtype `{dtype}` (use {', '.join(DTYPES)})")
    return DTYPES[dtype]


def build(spec, device="cpu", dtype=None, seed: int | None = None) -> GraphModule:
    """Compile a checked spec to a GraphModule (`graphformer.build` also takes a spec file path).

    Parameters are created directly on `device`; on meta nothing is allocated and init is skipped.
    `seed` makes the init deterministic (normal(0, 0.02) weights, zero biases, unit norm scales);
    without it the global torch RNG is used. The module is returned in training mode, like any
    freshly constructed nn.Module: call `.eval()` before inference.
    """
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    ir = spec.ir
    order = ir.nodes()
    missing = sorted({n.op for n in order if n.op != "input" and n.op not in LOWERINGS})
    if missing:
        raise UsageError(f"no torch lowering for op{'s' * (len(missing) > 1)} {', '.join(missing)}")
    if dev.type != "meta":  # created in float32, then cast
        memory.require(memory.param_bytes(ir), f"building `{ir.name}`", str(dev))
    with torch.device(dev):
        model = compile_graph(spec, order, progress=f"building {ir.name}")
    if dev.type != "meta":   # each tensor cast as soon as it is drawn: float32 is never held whole
        init_parameters(model, seed, dev, progress=f"initialising {ir.name}", dtype=dt)
    if dt is not None:
        model.to(dt)   # the buffers (and a meta model's parameters)
    return model


def compile_graph(spec, order=None, progress: str | None = None) -> GraphModule:
    """The modules and generated code of `spec.ir`, parameters uninitialised, on the current device.

    Also what a block-valued attribute's body (MoE's expert) compiles with: `spec` is then anything
    with `.ir` and `.name`. `progress` labels a bar over the top-level nodes and layers (base/progress.py)."""
    ir = spec.ir
    order = order or ir.nodes()
    root = _plan.scopes(ir, order)
    model = GraphModule(spec)
    _populate(model, root, ir, model, progress=progress)
    _share(model, ir)
    _tie(model, ir)
    _generate(model, root, ir, order)
    return model


def _populate(block: Block, scope: _plan.Scope, ir, model: GraphModule, prefix: tuple[str, ...] = (),
              progress: str | None = None) -> None:
    """Create every node's module and every child block, at the keys the generated code uses."""
    items = scope.items if progress is None else track(scope.items, len(scope.items), progress, "layer")
    for item in items:
        if not isinstance(item, _plan.Scope):
            key = scope.rel(item.name)
            block.put(key, LOWERINGS[item.op](item, ir.input_types(item)))
            model._leaf_keys[item.name] = prefix + (key,)
            continue
        sub = Block(item.path)
        if item.repeated:
            items = block._modules.get(item.keys[0])
            if items is None:
                items = nn.ModuleList()
                block.put(item.keys[0], items)
            assert len(items) == int(item.keys[1]), f"repetitions of {item.path} out of order"
            items.append(sub)
        else:
            block.put(item.keys[0], sub)
        _populate(sub, item, ir, model, prefix + item.keys)


def _share(model: GraphModule, ir) -> None:
    """`share`: each node of a sharing repetition keeps a module of its own (its own cache slot, its own
    buffers), whose parameters are its owner's Parameter objects: `parameters()` holds them once and
    their gradients add up over the repetitions. The state dict holds them once, under the owner's names."""
    shared = ir.shared
    if not shared:
        return
    model._shared = dict(shared)
    model.relink_shared()
    model._shared_keys = frozenset(f"{n}.{k}" for n in shared
                                   for k, _ in model.node_module(n).named_parameters(remove_duplicate=False))
    model.register_state_dict_post_hook(_drop_shared)
    model.register_load_state_dict_post_hook(_forgive_shared)


def _drop_shared(module: GraphModule, state_dict, prefix: str, local_metadata) -> None:
    for k in module._shared_keys:
        state_dict.pop(prefix + k, None)


def _forgive_shared(module: GraphModule, incompatible) -> None:
    """A shared repetition's parameters are loaded under their owner's names: not missing."""
    keys = module._shared_keys
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys
                                    if k not in keys and not any(k.endswith("." + s) for s in keys)]


def _tie(model: GraphModule, ir) -> None:
    for name, owner in ir.ties.items():
        model.node_module(name).tie(model.node_module(owner))


def _generate(model: GraphModule, root: _plan.Scope, ir, order) -> None:
    masks = _plan.mask_values(ir, order, model.node_module)

    def walk(block: Block, scope: _plan.Scope):
        kw = dict(mask_values=masks)
        if block is model:
            kw.update(root_outputs=dict(ir.outputs), root_inputs=list(ir.inputs))
        block.set_code(_plan.generate(scope, True, model.node_module, **kw),
                       _plan.generate(scope, False, model.node_module, **kw))
        for child in scope.children.values():
            sub = block._modules[child.keys[0]]
            walk(sub[int(child.keys[1])] if child.repeated else sub, child)
    walk(model, root)


def init_parameters(model: nn.Module, seed: int | None = None, device=None, progress: str | None = None,
                    dtype=None) -> None:
    """Deterministic init in registration (= IR) order.

    A module may define `init_parameters(generator)` for its own scheme; otherwise by name and rank:
    biases 0, 1-D `weight`s (norm scales) 1, everything else normal(0, 0.02). `progress` labels a bar
    per tensor (base/progress.py): at a large size this is most of a build's time. `dtype`: each
    floating-point parameter is cast to it right after its init (the same values as casting the module
    afterwards), so a bf16 build never holds the whole model in float32: the parameters are created
    with `torch.empty`, whose pages cost nothing until the init writes them.
    """
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device or "cpu")
        gen.manual_seed(seed)
    jobs: list[tuple[nn.Module, str | None, nn.Parameter | None]] = []   # in the order the RNG is drawn
    seen: set[int] = set()   # a parameter shared by repetitions (`share`) is drawn once, at its owner

    def collect(mod: nn.Module) -> None:
        custom = getattr(type(mod), "init_parameters", None)
        if custom is not None and not isinstance(mod, GraphModule):
            mine = {id(p) for p in mod.parameters()}
            if not mine or not mine <= seen:
                jobs.append((mod, None, None))  # owns its whole subtree
            seen.update(mine)
            return
        for name, p in mod.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                jobs.append((mod, name, p))
        for child in mod.children():
            collect(child)
    collect(model)

    with torch.no_grad():
        for mod, name, p in jobs if progress is None else track(jobs, len(jobs), progress, "tensor"):
            if p is None:
                mod.init_parameters(gen)
            elif name == "bias":
                p.zero_()
            elif name == "weight" and p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, INIT_STD, generator=gen)
            for q in (mod.parameters() if p is None else [p]) if dtype is not None else ():
                if q.is_floating_point() and q.dtype != dtype:
                    q.data = q.data.to(dtype)
