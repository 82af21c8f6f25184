"""Shared test setup.

- Tests compare plain text: a FORCE_COLOR or NO_COLOR in the developer's environment must not change it
  (test_package.py sets them where it tests colour).
- The helpers beside this file (parity.py, shape_cases.py, dist_worker.py, browser.py) import by name from
  every tier's folder.
- GRAPHFORMER_STRICT_DEPS=1 (set by CI, which installs everything): a test skipped because a package, a
  binary or a browser is missing fails instead, so a broken install step can't hide as a green run.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

for _name in ("FORCE_COLOR", "NO_COLOR"):
    os.environ.pop(_name, None)

UNIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unit") + os.sep
BLOCKED = ("torch", "onnx", "onnxruntime", "transformers", "safetensors")


class _TorchFree:
    """A meta-path finder that refuses torch & co.: the unit tier's promise, kept when it runs alone."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (the unit tier is torch-free: a test that "
                                      f"needs it belongs in tests/integration/)", name=name)
        return None


def pytest_collection_finish(session):
    if session.items and all(str(item.path).startswith(UNIT) for item in session.items) \
            and not any(m.split(".")[0] in BLOCKED for m in sys.modules):
        sys.meta_path.insert(0, _TorchFree())


STRICT = os.environ.get("GRAPHFORMER_STRICT_DEPS") == "1"
# skip reasons that mean "something CI should have installed is missing"
MISSING = ("could not import", "No module named", "is not installed", "is not available", "Chromium",
           "chromium", "toolchain")


def _missing_dependency(report) -> str | None:
    if not (STRICT and report.skipped and isinstance(report.longrepr, tuple)):
        return None
    reason = str(report.longrepr[2])
    return reason if any(m in reason for m in MISSING) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    reason = _missing_dependency(report)
    if reason:
        report.outcome = "failed"
        report.longrepr = f"GRAPHFORMER_STRICT_DEPS=1: skipped for a missing dependency: {reason}"


def pytest_collectreport(report):
    reason = _missing_dependency(report)
    if reason:
        report.outcome = "failed"
        report.longrepr = f"GRAPHFORMER_STRICT_DEPS=1: module skipped for a missing dependency: {reason}"
