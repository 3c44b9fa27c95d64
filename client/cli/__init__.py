"""The ``pyarchive`` command line (click): accounts, files, transfers and sync, over the
``client`` library. ``main`` is the console script's entry point."""

from client.cli.commands import main

__all__ = ["main"]
