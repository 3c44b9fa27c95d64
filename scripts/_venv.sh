# Sourced by the scripts in this folder: makes sure .venv exists and holds this checkout's
# package with its test extras, reinstalling only when setup.cfg or pyproject.toml changed.
# Afterwards $PY is the venv's python and the working directory is the checkout's root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
# Playwright drives Debian's Chromium (/usr/bin/chromium); it must never fetch a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ ! -x "$PY" ]; then
  if ! command -v python3 >/dev/null; then
    echo "PyArchive needs python3 (3.11 or newer) to create .venv" >&2
    exit 1
  fi
  python3 -m venv .venv
fi
stamp="$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat .venv/.pyarchive-installed 2>/dev/null)" != "$stamp" ]; then
  echo "Installing PyArchive and its dependencies into .venv (log: .venv/install.log) ..." >&2
  if ! { "$PY" -m pip install --upgrade pip && "$PY" -m pip install -e '.[test]'; } \
      > .venv/install.log 2>&1; then
    tail -n 20 .venv/install.log >&2
    echo "Installing into .venv failed; the whole log is .venv/install.log" >&2
    exit 1
  fi
  echo "$stamp" > .venv/.pyarchive-installed
fi

# need_system_package COMMAND DEBIAN_PACKAGE WHY: install it with apt-get when COMMAND (a name
# on PATH, or an absolute path) is missing and running as root; otherwise stop with one clear line.
need_system_package() {
  local command_name="$1" package="$2" why="$3"
  command -v "$command_name" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing $package ($why) with apt-get ..." >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >&2
  else
    echo "PyArchive needs '$command_name' ($why): install the Debian package '$package' (apt-get install $package) and run this again." >&2
    exit 1
  fi
}
