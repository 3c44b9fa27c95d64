"""Property: whatever chunk sequence a client sends, an upload is never corrupted.

Every chunk carries the source's own bytes for the range it claims (that is all a server can
check against); ranges, totals and lengths are random. After each request, either it was
refused and the offset did not move, or it was accepted and the offset moved to its end, and
in both cases the staged bytes up to the offset equal the source's prefix.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.proc import ProxyProcess, chunk_headers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def proxy(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProxyProcess, str]]:
    process = ProxyProcess(tmp_path_factory.mktemp("proxy") / "data", module_database_url)
    process.start()
    try:
        yield process, process.login()
    finally:
        process.stop()


chunk_op = st.tuples(
    st.sampled_from(["offset", "offset", "offset", "behind", "ahead"]),  # where it starts
    st.integers(0, 100),  # how far behind/ahead, in percent of the file
    st.integers(0, 60),  # length claimed by Content-Range, in percent of the file
    st.sampled_from(["same", "same", "larger", "smaller", "unknown"]),  # TOTAL sent
    st.sampled_from(["exact", "exact", "exact", "short", "long"]),  # body vs the claim
)


def test_random_chunk_sequences_never_corrupt_an_upload(
    proxy: tuple[ProxyProcess, str],
) -> None:
    # Hypothesis runs inside the test (not as its decorator) so that pytest-twisted's hook
    # for test functions, which this synchronous test does not need, stays out of its way.
    process, token = proxy

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        size=st.integers(1, 6000),
        first=st.integers(1, 3000),
        ops=st.lists(chunk_op, max_size=12),
        seed=st.integers(0, 2**32 - 1),
    )
    def check(size: int, first: int, ops: list[tuple[str, int, int, str, str]], seed: int) -> None:
        source = random.Random(seed).randbytes(size)
        first = min(first, size)
        status, upload = process.request(
            "PUT", "/storage/tmp-upload/?filename=prop.bin", source[:first],
            chunk_headers(token, 0, first - 1, size),
        )  # fmt: skip
        assert status == 200, upload
        path = upload["url"].split(str(process.port), 1)[1]
        staged = process.data_dir / "staging" / f"{upload['id']}.part"
        try:
            chunks(source, path, staged, first, ops)
        finally:  # each example's upload is aborted: an account may keep only 20 open
            process.request("DELETE", path, headers={"Authorization": f"JWT {token}"})

    def chunks(
        source: bytes,
        path: str,
        staged: Path,
        first: int,
        ops: list[tuple[str, int, int, str, str]],
    ) -> None:
        """Send ``ops`` after the first chunk, checking the upload after each."""
        size = len(source)
        offset = first
        for where, distance, length, total_kind, body_kind in ops:
            shift = 1 + distance * size // 100
            start = {"offset": offset, "behind": max(0, offset - shift),
                     "ahead": offset + shift}[where]  # fmt: skip
            end = start + length * size // 100
            totals: dict[str, int | str] = {
                "same": size, "larger": size + 1, "smaller": max(size - 1, 1), "unknown": "*",
            }  # fmt: skip
            total = totals[total_kind]
            body = source[start : end + 1]
            if body_kind == "short":
                body = body[:-1]
            elif body_kind == "long":
                body = body + b"x"
            status, answer = process.request(
                "PUT", path, body, chunk_headers(token, start, end, total)
            )
            _, now = process.request("GET", path, headers={"Authorization": f"JWT {token}"})
            if status == 200:
                assert start == offset, "only a chunk at the current offset may be accepted"
                assert now["offset"] == end + 1 == answer["offset"]
            else:
                assert 400 <= status < 500, answer
                assert "detail" in answer
                assert now["offset"] == offset, f"a refused chunk moved the offset: {answer}"
            offset = now["offset"]
            assert offset <= size
            assert Path(staged).read_bytes()[:offset] == source[:offset]

    check()
