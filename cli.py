"""``python cli.py ARGS`` behaves exactly as ``flowengine ARGS``, from a checkout."""

import sys

from flowengine.cli import main

if __name__ == "__main__":
    sys.exit(main())
