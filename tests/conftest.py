"""Tests compare plain text: a FORCE_COLOR or NO_COLOR in the developer's environment must not change it
(test_package.py sets them where it tests colour)."""
import os

for _name in ("FORCE_COLOR", "NO_COLOR"):
    os.environ.pop(_name, None)
