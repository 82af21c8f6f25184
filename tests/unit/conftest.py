"""The unit tier is torch-free: when it runs on its own (`pytest tests/unit`, as scripts/test.sh does
first), torch, ONNX and transformers can't be imported by its tests (tests/conftest.py blocks them once
collection shows only this tier), so a test that needs them fails at once instead of slowing the tier
down. `check`, `summary`, `draw` and `schema` promise to work without torch; these tests hold them to it."""
