"""The web application's browser scripts: `scripts/build-assets` bundles them from npm, their
pure modules pass Node's own test runner, and the upload page's template keeps the DOM the
scripts and the browser tests rely on.

Needs Node.js >= 20 with npm (Debian: apt-get install nodejs npm); skipped, with that reason,
only where `node` is missing. `scripts/build-assets` fetches the locked npm packages the first
time (npm registry), then skips while its output is newer than its sources.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "proxy" / "web" / "assets"
DIST = ROOT / "proxy" / "web" / "static" / "dist"
TEMPLATES = ROOT / "proxy" / "web" / "templates"
BUILD = ROOT / "scripts" / "build-assets"
TIMEOUT = 600.0

needs_node = pytest.mark.skipif(
    shutil.which("node") is None,
    reason="Node.js is not installed (apt-get install nodejs npm): the browser scripts "
    "can be neither built nor tested",
)


def _run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {done.returncode}\n--- stdout\n{done.stdout[-6000:]}"
        f"\n--- stderr\n{done.stderr[-6000:]}"
    )


@pytest.fixture(scope="module")
def built() -> Path:
    done = _run([str(BUILD)])
    assert done.returncode == 0, _output(done)
    return DIST


@needs_node
def test_build_assets_bundles_the_page_script_and_the_worker_with_their_licences(
    built: Path,
) -> None:
    upload = (built / "upload.js").read_text()
    worker = (built / "sha256-worker.js").read_text()
    # The page's script is an ES module that finds the worker beside itself.
    assert "import.meta.url" in upload
    assert "sha256-worker.js" in upload
    # tus-js-client and hash-wasm are inside, nothing is imported from elsewhere.
    assert "Tus-Resumable" in upload
    assert not re.search(r"""\bimport\s*[("']|\bimport\s+[\w{*]""", upload)
    assert "postMessage" in worker
    assert (built / "upload.js.map").is_file()
    licences = (built / "THIRD_PARTY_LICENSES.txt").read_text()
    assert "tus-js-client" in licences and "hash-wasm" in licences


@needs_node
def test_build_assets_does_nothing_when_the_bundles_are_up_to_date(built: Path) -> None:
    before = (built / "upload.js").stat().st_mtime_ns
    done = _run([str(BUILD)])
    assert done.returncode == 0, _output(done)
    assert done.stderr == ""
    assert (built / "upload.js").stat().st_mtime_ns == before


@needs_node
def test_build_assets_without_npm_fails_with_one_clear_line(tmp_path: Path) -> None:
    # A PATH with node and the few tools the script uses, but no npm.
    for tool in ("node", "dirname", "find", "env"):
        found = shutil.which(tool)
        assert found is not None, tool
        (tmp_path / tool).symlink_to(found)
    bash = shutil.which("bash")
    assert bash is not None
    done = _run([bash, str(BUILD)], env={**os.environ, "PATH": str(tmp_path)})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("build-assets: npm not found"), lines[0]


@needs_node
def test_the_scripts_pure_modules_pass_node_test(built: Path) -> None:
    # After the build: its npm ci installed hash-wasm, which the hashing tests import.
    files = sorted(str(path) for path in (ASSETS / "test").glob("*.test.js"))
    assert files, "no test files in proxy/web/assets/test/"
    done = _run(["node", "--test", "--test-reporter=tap", *files])
    assert done.returncode == 0, _output(done)
    assert re.search(r"^# fail 0$", done.stdout, re.MULTILINE), _output(done)
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.MULTILINE)
    assert passed and int(passed.group(1)) > 0, _output(done)


def _render(unfinished: list[dict[str, object]]) -> str:
    jinja2 = pytest.importorskip("jinja2")
    base = (
        "<!doctype html><html><head><meta name='csrf-token' content='t'>"
        "<title>{% block title %}{% endblock %}</title></head>"
        "<body>{% block content %}{% endblock %}{% block scripts %}{% endblock %}</body></html>"
    )
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.DictLoader({"base.html": base}), jinja2.FileSystemLoader(TEMPLATES)]
        ),
        autoescape=True,
    )
    page: str = env.get_template("archives_new.html").render(
        tus_endpoint="/files/",
        chunk_size=8 << 20,
        stall_seconds=30,
        unfinished=unfinished,
    )
    return page


UNFINISHED = {
    "id": "0123abcd",
    "url": "http://127.0.0.1:8000/files/0123abcd",
    "filename": 'big <"one">.bin',
    "size": 4 << 30,
    "offset": 1 << 30,
    "created_at": "2026-12-01T13:00:00Z",
    "fingerprint": "f" * 64,
}


def test_the_upload_page_has_the_form_the_script_and_the_browser_tests_use() -> None:
    page = _render([])
    for needle in (
        'id="upload-form"',
        'data-tus-endpoint="/files/"',
        f'data-chunk-size="{8 << 20}"',
        'data-stall-seconds="30"',
        '<label for="files">Files</label>',
        '<input type="file" id="files" name="files" multiple>',
        '<label for="archive-name">Archive name (optional)</label>',
        'id="auto-start" name="auto_start" checked',
        '<label for="auto-start">Start uploading when files are chosen</label>',
        '<button type="submit" id="upload-button">Upload</button>',
        'id="overall"',
        'id="uploads"',
        'id="unfinished"',
        '<template id="upload-row">',
        '<script type="module" src="/static/dist/upload.js"></script>',
    ):
        assert needle in page, needle
    row = page[page.index('<template id="upload-row">') : page.index("</template>")]
    for part in ('class="upload"', "<progress", "percent", "rate", "eta", "state", "detail"):
        assert part in row, part
    assert '<button type="button" class="pause" hidden>Pause</button>' in row
    assert '<button type="button" class="resume" hidden>Resume</button>' in row
    assert 'id="no-unfinished">' in page  # not hidden: nothing is unfinished


def test_the_upload_page_lists_unfinished_uploads_to_resume_escaped() -> None:
    page = _render([UNFINISHED, {**UNFINISHED, "id": "2", "size": None, "fingerprint": ""}])
    assert 'id="no-unfinished" hidden' in page
    items = re.findall(r"<li data-upload-id=.*?</li>", page, re.DOTALL)
    assert len(items) == 2
    first, second = items
    assert 'data-upload-url="http://127.0.0.1:8000/files/0123abcd"' in first
    assert 'data-filename="big &lt;&#34;one&#34;&gt;.bin"' in first
    assert f'data-size="{4 << 30}"' in first and f'data-offset="{1 << 30}"' in first
    assert f'data-fingerprint="{"f" * 64}"' in first
    assert "25 % of 4.0 GiB" in first
    assert "choose this file again to resume" in first
    assert 'data-size=""' in second and 'data-fingerprint=""' in second
    assert "1.0 GiB so far" in second


def test_the_upload_page_needs_nothing_the_csp_forbids() -> None:
    page = _render([UNFINISHED])
    assert " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)
    # Every script is a file of our own: no inline code, nothing from another origin.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.DOTALL)
    assert scripts
    for attributes, body in scripts:
        assert 'src="/static/' in attributes and body.strip() == "", attributes
