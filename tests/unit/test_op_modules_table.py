"""`graphformer.ops.MODULES` says which module registers which built-in op, so a lookup imports one family
(`Registry.homes`): the table must match what the modules register, op for op and in order."""
import os
import subprocess
import sys

from graphformer.ops import MODULES, REGISTRY, base

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_table_matches_the_modules():
    list(REGISTRY)   # every module imported
    for module, ops in MODULES.items():
        registered = [n for n, m in base._REGISTERED_BY.items() if m == f"graphformer.ops.{module}"]
        assert registered == list(ops), f"graphformer/ops/{module}.py registers {registered}; MODULES says {list(ops)}"
    assert set(base._REGISTERED_BY) == set(REGISTRY.homes)


def test_listing_order_is_fixed_whatever_was_looked_up_first():
    code = ("from graphformer.ops import REGISTRY\nREGISTRY['tile']; REGISTRY.get('moe'); 'conv1d' in REGISTRY\n"
            "print(' '.join(n for n in REGISTRY if n in REGISTRY.homes))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [op for ops in MODULES.values() for op in ops]


def test_check_imports_only_what_it_needs():
    # one spec, one family (plus `shape`, which the expander imports for its rank bound); no torch, onnx,
    # backends, renderers or transformers-config importer
    code = ("import sys\nfrom graphformer.cli import main\nassert main(['check', 'gpt2']) == 0\n"
            "print(' '.join(sorted(sys.modules)))")
    mods = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                              capture_output=True, text=True, check=True).stdout.split())
    families = {m.rsplit(".", 1)[1] for m in mods if m.rsplit(".", 1)[0] == "graphformer.ops"} & set(MODULES)
    assert families == {"core", "shape"}
    unwanted = {"torch", "onnx", "numpy", "graphformer.frontend.hf", "graphformer.render", "graphformer.backends",
                "graphformer.commands.build", "graphformer.commands.draw"}
    assert not unwanted & mods
