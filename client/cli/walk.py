"""Which local files an upload or a sync takes, and the path each gets on the server.

A file named on the command line goes to ``PREFIX/name``; a directory goes with its own name
and everything under it (``photos/2024/a.jpg`` -> ``PREFIX/photos/2024/a.jpg``), minus what a
``.pyarchiveignore`` excludes: gitignore patterns (the ``pathspec`` library), read in every
directory and applied to what is below it, as git does. Symbolic links are not followed (a
link to a parent would never end); the sync's own state folder is never sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pathspec

from client.cli.journal import Source

IGNORE_FILE = ".pyarchiveignore"
STATE_DIR = ".pyarchive"
# A download in progress (``client.cli.download``): never a file of the folder's own.
PARTIAL = (".pyarchive-part", ".pyarchive-part.json", ".pyarchive-part.json.tmp")


@dataclass(frozen=True)
class Skipped:
    local: Path
    why: str


@dataclass(frozen=True)
class _Rules:
    base: Path
    spec: pathspec.GitIgnoreSpec


def join(prefix: str, name: str) -> str:
    """A server path under ``prefix``.

    >>> join("", "a.txt"), join("backup", "a.txt"), join("backup/", "x/a.txt")
    ('a.txt', 'backup/a.txt', 'backup/x/a.txt')
    """
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def _ignored(path: Path, is_dir: bool, rules: Sequence[_Rules]) -> bool:
    for rule in rules:
        relative = path.relative_to(rule.base).as_posix() + ("/" if is_dir else "")
        if rule.spec.match_file(relative):
            return True
    return False


def _rules_in(directory: Path) -> list[_Rules]:
    try:
        lines = (directory / IGNORE_FILE).read_text("utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [_Rules(directory, pathspec.GitIgnoreSpec.from_lines(lines))]


def _source(path: Path, remote: str) -> Source:
    status = path.stat()
    return Source(path.absolute(), remote, status.st_size, status.st_mtime_ns)


def _walk(directory: Path, remote: str, rules: list[_Rules]) -> Iterator[Source | Skipped]:
    rules = rules + _rules_in(directory)
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as error:
        yield Skipped(directory, error.strerror or str(error))
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name in (STATE_DIR, IGNORE_FILE) or entry.name.endswith(PARTIAL):
            continue
        if entry.is_symlink():
            yield Skipped(path, "a symbolic link (not followed)")
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        if _ignored(path, is_dir, rules):
            continue
        if is_dir:
            yield from _walk(path, join(remote, entry.name), rules)
        elif entry.is_file(follow_symlinks=False):
            yield _source(path, join(remote, entry.name))


def tree(directory: Path, prefix: str = "") -> Iterator[Source | Skipped]:
    """Every file under ``directory``, each with its path relative to it (under ``prefix``)."""
    return _walk(directory, prefix.strip("/"), [])


def sources(paths: Sequence[Path], prefix: str) -> Iterator[Source | Skipped]:
    """Every file the arguments name, in order, each with its server path; what is skipped
    and why. A missing argument raises FileNotFoundError before anything is yielded."""
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(2, "no such file or directory", str(path))
    for path in paths:
        name = path.absolute().name or "root"
        if path.is_dir() and not path.is_symlink():
            yield from _walk(path, join(prefix, name), [])
        elif path.is_file():
            yield _source(path, join(prefix, name))
        else:
            yield Skipped(path, "not a regular file")
