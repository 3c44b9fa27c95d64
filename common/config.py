"""Typed configuration read once at start-up.

A setting comes from, in rising precedence: its default, the config file (INI, one section per
role: ``[proxy]`` or ``[node]``), a ``PYARCHIVE_<NAME>`` environment variable, and the command
line. Each role declares its settings as a frozen dataclass whose fields carry the parser and
the help text, so ``etc/*.conf-sample`` and the code cannot drift apart (a test compares them).
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

_SIZE = re.compile(r"(\d+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SECONDS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


def parse_size(text: str) -> int:
    """Bytes from ``64MiB``, ``64M``, ``1GiB`` or a plain number (binary units).

    >>> parse_size("64MiB"), parse_size("1g"), parse_size("512")
    (67108864, 1073741824, 512)
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    unit = (match[2] or "").upper()[:1]
    return int(match[1]) * _UNITS[unit if unit != "B" else ""]


def format_size(size: int) -> str:
    """Bytes as people read them (binary units), the other way from ``parse_size``.

    >>> format_size(0), format_size(1023), format_size(1536), format_size(5 * 2**30)
    ('0 B', '1023 B', '1.5 KiB', '5.0 GiB')
    """
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_duration(text: str) -> float:
    """Seconds from ``24h``, ``30m``, ``10s``, ``250ms`` or a plain number of seconds.

    >>> parse_duration("24h"), parse_duration("1.5s"), parse_duration("90")
    (86400.0, 1.5, 90.0)
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return float(match[1]) * _SECONDS[match[2] or ""]


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def setting(
    default: Any, parse: Callable[[str], Any], help: str, *, shown: str | None = None
) -> Any:
    """Declare one setting: its default, how to parse it from text, and what it means.

    ``shown`` is the default as a person would write it in the file (``24h`` for 86400.0).
    """
    return dataclasses.field(
        default=default,
        metadata={"parse": parse, "help": help, "shown": str(default) if shown is None else shown},
    )


T = TypeVar("T")


def load(
    cls: type[T],
    section: str,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults, the file's ``[section]``, ``PYARCHIVE_*`` and overrides.

    ``overrides`` holds already-typed values (from the command line); None values are ignored.
    """
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    raw: dict[str, tuple[str, str]] = {}
    if config_file:
        parser = configparser.ConfigParser(interpolation=None)
        if not parser.read(config_file):
            raise ConfigError(f"cannot read config file {config_file}")
        if parser.has_section(section):
            for key, value in parser.items(section):
                name = key.replace("-", "_")
                if name not in fields:
                    raise ConfigError(f"{config_file}: unknown setting {key!r} in [{section}]")
                raw[name] = (value, f"{config_file} [{section}] {key}")
    for name in fields:
        env_name = "PYARCHIVE_" + name.upper()
        if env_name in environ:
            raw[name] = (environ[env_name], env_name)
    values: dict[str, Any] = {}
    for name, (text, source) in raw.items():
        try:
            values[name] = fields[name].metadata["parse"](text)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    return cls(**values)


def sample_file(cls: type[Any], section: str, preamble: list[str]) -> str:
    """The text of ``etc/<role>.conf-sample``: ``preamble`` lines, then every setting of
    ``cls`` commented out under ``[section]``, with its meaning and its default."""
    lines = [*preamble, "", f"[{section}]"]
    for name, default, help_text in describe(cls):
        lines.extend(textwrap.wrap(help_text, 96, initial_indent="# ", subsequent_indent="# "))
        lines.append(f"# {name} = {default}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def describe(cls: type[Any]) -> list[tuple[str, str, str]]:
    """(name, default as written in a file, help) for each setting, for the sample file."""
    return [(f.name, f.metadata["shown"], f.metadata["help"]) for f in dataclasses.fields(cls)]
