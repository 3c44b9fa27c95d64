"""Many uploads at once through a link that cuts connections at random; nothing may hang.

A real proxy process sits behind a TCP relay that, with the chosen probability, cuts each
connection (by FIN or by RST) at a random byte of the request, a random byte of the answer,
or a few milliseconds after the request's last byte with the answer never delivered. Every
upload is resumed from the offset the server reports until it completes; then its stored md5,
sha256 and downloaded bytes are compared with the source. Each request must be answered within
5 s. Prints one RESULT line; exits 1 if any upload failed, hung or went backwards.

Usage: scripts/reliability disconnect [--uploads 40] [--concurrency 8] [--min-mib 1]
       [--max-mib 8] [--chunk-kib 512] [--cut-chance 0.35] [--seed 8] [--database URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the harness is the test suite's own (tests/disconnect_kit.py)

from tests.disconnect_kit import random_disconnect_run  # noqa: E402
from tests.proc import ProxyProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--min-mib", type=float, default=1)
    parser.add_argument("--max-mib", type=float, default=8)
    parser.add_argument("--chunk-kib", type=int, default=512)
    parser.add_argument("--cut-chance", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--database", default="", help="default: SQLite in a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyarchive-disconnect-") as tmp:
        home = Path(tmp)
        database = args.database or f"sqlite:///{home}/meta.sqlite3"
        proxy = ProxyProcess(home / "proxy", database).start()
        try:
            report = random_disconnect_run(
                proxy,
                proxy.login(),
                uploads=args.uploads,
                concurrency=args.concurrency,
                sizes=(int(args.min_mib * 2**20), int(args.max_mib * 2**20)),
                chunk=args.chunk_kib * 1024,
                seed=args.seed,
                cut_chance=args.cut_chance,
            )
        finally:
            proxy.stop()
    kind = database.split(":", 1)[0]
    print(f"RESULT reliability disconnect ({kind}, seed {args.seed}): {report.line()}")
    for failure in report.failures:
        print("FAILED", failure)
    bad = report.failures or report.hangs or report.backwards or report.intact < report.uploads
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
