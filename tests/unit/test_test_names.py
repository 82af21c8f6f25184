"""Test files have distinct names across the tiers: pytest imports them by basename (no __init__.py), so
two `test_x.py` in different folders fail to collect together."""
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_file_names_are_unique_across_tiers():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1]
