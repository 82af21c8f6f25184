"""`python -m graphformer ...`: the same command line as the `graphformer` script."""
import sys

from .cli import main

sys.exit(main())
