"""The ``pyarchive`` console script: the group of ``client.cli.app`` with every command
module's commands on it.

Each command is a thin layer over ``client.PyArchiveClient``: it reads what it needs from the
settings (``client.cli.settings``), calls the server, and prints either a few lines for a
person or, with ``--json``, the server's JSON for a script. Every failure ends the same way
(``client.cli.failures``): one line on stderr and an exit code a script can test.
"""

from __future__ import annotations

from client.cli import account, files, transfer
from client.cli.app import cli

COMMAND_MODULES = (account, files, transfer)  # importing them puts their commands on ``cli``


def main() -> None:
    cli(prog_name="pyarchive")
