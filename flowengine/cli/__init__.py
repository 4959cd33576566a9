"""The command line, on top of every other layer; ``flowengine.cli:main`` is the script."""

from flowengine.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
