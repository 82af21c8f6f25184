"""Run graphformer from a checkout without installing it: `python cli.py check specs/gpt2.yaml`.

The command line lives in graphformer/cli.py (installed as the `graphformer` script and run by
`python -m graphformer`); this file only forwards to it.
"""
import sys

from graphformer.cli import main

if __name__ == "__main__":
    sys.exit(main())
