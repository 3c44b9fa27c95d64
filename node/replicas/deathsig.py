"""Start a program that dies with the process that started it, even when that one is SIGKILLed.

``python -I deathsig.py PARENT_PID PROGRAM ARGV0 ARGS...`` asks Linux to send this process
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), checks that the parent is still
``PARENT_PID`` (a parent that died before the request was made would never send it), and
then becomes ``PROGRAM`` with ``execv``: same pid, and the setting survives the exec.

The node starts its rsync daemon through this, because ``spawnProcess`` has no hook to run
code in the child before the exec. Elsewhere than on Linux the program is simply exec'd, and
the node's start-up still stops a daemon left behind, by its pid file.

Only the standard library is imported, so the script runs in isolated mode (``-I``) without
the project on the path.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
SCRIPT = os.path.abspath(__file__)


def wrapped(parent_pid: int, program: str, argv: Sequence[str]) -> list[str]:
    """The argument list that runs ``program`` with ``argv``, bound to ``parent_pid``'s life.

    >>> wrapped(42, "/usr/bin/rsync", ["rsync", "--daemon"])[3:]
    ['42', '/usr/bin/rsync', 'rsync', '--daemon']
    """
    return [sys.executable, "-I", SCRIPT, str(parent_pid), program, *argv]


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel for ``sig`` when the parent exits; False where that cannot be asked."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    return True


def main(args: Sequence[str]) -> int:
    if len(args) < 3:
        print("usage: deathsig.py PARENT_PID PROGRAM ARGV0 [ARGS...]", file=sys.stderr)
        return 2
    parent, program, argv = int(args[0]), args[1], list(args[2:])
    armed = die_with_parent()
    if armed and os.getppid() != parent:
        return 1  # the parent is gone already: start nothing it cannot stop
    os.execv(program, argv)
    return 127  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
