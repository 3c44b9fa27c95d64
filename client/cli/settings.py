"""Where the command line keeps what it knows between runs: the server's address and the
token, in the user's configuration directory (``$XDG_CONFIG_HOME/pyarchive``, else
``~/.config/pyarchive``, or ``--config-dir``).

The token is a credential: its file is created with mode 0600 before a byte is written, and
replaced atomically (written beside it, then renamed), so a crash never leaves half a token
or a moment in which another user could read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETTINGS = "settings.json"
TOKEN = "token"
KEYS = ("server",)  # what ``pyarchive config set`` may set


def config_dir(explicit: str | None, environ: dict[str, str] | None = None) -> Path:
    """``--config-dir``, else ``$XDG_CONFIG_HOME/pyarchive``, else ``~/.config/pyarchive``.

    >>> str(config_dir("/tmp/x")), str(config_dir(None, {"XDG_CONFIG_HOME": "/c"}))
    ('/tmp/x', '/c/pyarchive')
    """
    if explicit:
        return Path(explicit)
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pyarchive"


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, readable by its owner only, all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old leftover with wider rights is narrowed first
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


@dataclass
class Settings:
    directory: Path

    def _read(self) -> dict[str, Any]:
        try:
            loaded = json.loads((self.directory / SETTINGS).read_text("utf-8"))
        except FileNotFoundError:
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def get(self, key: str) -> str | None:
        value = self._read().get(key)
        return value if isinstance(value, str) else None

    def set(self, key: str, value: str) -> None:
        current = self._read()
        current[key] = value
        write_private(self.directory / SETTINGS, json.dumps(current, indent=2).encode() + b"\n")

    def all(self) -> dict[str, Any]:
        return self._read()

    @property
    def token(self) -> str | None:
        try:
            text = (self.directory / TOKEN).read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def keep_token(self, token: str) -> None:
        write_private(self.directory / TOKEN, token.encode() + b"\n")

    def forget_token(self) -> bool:
        try:
            (self.directory / TOKEN).unlink()
        except FileNotFoundError:
            return False
        return True
