"""The unit tier is torch-free: run on its own (`pytest tests/unit`, as scripts/test.sh does first), torch,
ONNX and transformers can't be imported here, so a test that needs them fails at once instead of slowing
the tier down. (`check`, `summary`, `draw` and `schema` promise to work without torch; these tests hold
them to it.) When the tiers run in one process, another tier has loaded torch already and nothing is
blocked."""
import sys

BLOCKED = ("torch", "onnx", "onnxruntime", "transformers", "safetensors")


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (the unit tier is torch-free: a test that "
                                      f"needs it belongs in tests/integration/)", name=name)
        return None


if not any(m.split(".")[0] in BLOCKED for m in sys.modules):
    sys.meta_path.insert(0, _Blocker())
