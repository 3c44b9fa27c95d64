"""Who the proxy and the nodes trust: per-node keys, requests bound to the node they are for,
nonces kept until their own timestamp leaves the window, and download tokens per node."""

from __future__ import annotations

import doctest
import hashlib
from dataclasses import replace

import jwt
import pytest

import common.signing
import node.api.receiving
import node.service
from common.errors import Forbidden
from common.signing import (
    DEFAULT_WINDOW,
    NODE,
    DownloadGrant,
    NodeKeys,
    RequestVerifier,
    issue_download_token,
    node_key,
    replica_key,
    sign_request,
    verify_download_token,
)
from node.config import NodeConfig

SECRET = "signing-test-cluster-secret-of-enough-length"
NOW = 1_800_000_000.0
PATH = "/internal/replicas"
EMPTY = hashlib.sha256(b"").hexdigest()


def verify(verifier: RequestVerifier, headers: dict[str, str], *, now: float = NOW) -> None:
    verifier.verify("GET", PATH, EMPTY, dict(headers), now=now)


def test_the_modules_examples_hold() -> None:
    for module in (common.signing, node.api.receiving, node.service):
        results = doctest.testmod(module)
        assert results.attempted > 0 and results.failed == 0, module


def test_each_node_has_its_own_key_for_each_use() -> None:
    a, b = NodeKeys.for_node(SECRET, "a"), NodeKeys.for_node(SECRET, "b")
    assert a == NodeKeys.from_node_key("a", node_key(SECRET, "a"))  # what the node derives
    uses = ("request", "download", "transport", "rsync_password")
    values = [getattr(k, use) for k in (a, b) for use in uses]
    assert len(set(values)) == len(values)  # no two nodes, no two uses share a key
    secret_values = [str(v) for v in values] + [node_key(SECRET, "a")]
    assert not any(v in repr(a) for v in secret_values)
    # A node key is good for its own name only: used under another name it yields other keys.
    assert NodeKeys.from_node_key("b", node_key(SECRET, "a")) != b


def test_a_request_signed_with_another_nodes_key_is_refused() -> None:
    verifier = RequestVerifier(NodeKeys.for_node(SECRET, "b"))
    from_a = sign_request(NodeKeys.for_node(SECRET, "a"), "GET", PATH, b"", now=NOW)
    with pytest.raises(Forbidden, match="for another node"):
        verify(verifier, from_a)
    with pytest.raises(Forbidden, match="does not match"):
        verify(verifier, {**from_a, NODE: "b"})
    verify(verifier, sign_request(NodeKeys.for_node(SECRET, "b"), "GET", PATH, b"", now=NOW))


def test_the_node_a_request_is_for_is_part_of_what_is_signed() -> None:
    # Even with the very same request key, a request made for node a is no good at node b.
    a = NodeKeys.for_node(SECRET, "a")
    same_key_b = replace(a, node="b")
    verifier = RequestVerifier(same_key_b)
    for_a = sign_request(a, "GET", PATH, b"", now=NOW)
    assert for_a[NODE] == "a"
    with pytest.raises(Forbidden, match="for another node"):
        verify(verifier, for_a)
    with pytest.raises(Forbidden, match="does not match"):
        verify(verifier, {**for_a, NODE: "b"})
    verify(verifier, sign_request(same_key_b, "GET", PATH, b"", now=NOW))


def test_a_nonce_is_remembered_until_its_own_timestamp_leaves_the_window() -> None:
    keys = NodeKeys.for_node(SECRET, "a")
    verifier = RequestVerifier(keys)
    # Signed by a proxy whose clock runs 25 s ahead: fresh here until NOW + 25 + window.
    ahead = sign_request(keys, "GET", PATH, b"", now=NOW + 25)
    verify(verifier, ahead, now=NOW)
    for later in (NOW + 1, NOW + DEFAULT_WINDOW + 1, NOW + 25 + DEFAULT_WINDOW):
        with pytest.raises(Forbidden, match="already used"):
            verify(verifier, ahead, now=later)
    with pytest.raises(Forbidden, match="expired"):  # and after that it is stale
        verify(verifier, ahead, now=NOW + 25 + DEFAULT_WINDOW + 1)


def test_nonces_are_forgotten_once_their_requests_are_stale() -> None:
    keys = NodeKeys.for_node(SECRET, "a")
    verifier = RequestVerifier(keys)
    for offset in (0, 10, 20):
        verify(verifier, sign_request(keys, "GET", PATH, b"", now=NOW + offset), now=NOW + 20)
    assert verifier.remembered() == 3
    verify(verifier, sign_request(keys, "GET", PATH, b"", now=NOW + 45), now=NOW + 45)
    assert verifier.remembered() == 2  # those signed at NOW + 20 and NOW + 45


@pytest.mark.parametrize("skew", [-DEFAULT_WINDOW - 1, DEFAULT_WINDOW + 1])
def test_a_request_whose_timestamp_is_outside_the_window_is_refused(skew: float) -> None:
    keys = NodeKeys.for_node(SECRET, "a")
    with pytest.raises(Forbidden, match="expired"):
        verify(RequestVerifier(keys), sign_request(keys, "GET", PATH, b"", now=NOW + skew))


def test_the_headers_alone_are_checked_before_the_body() -> None:
    keys = NodeKeys.for_node(SECRET, "a")
    verifier = RequestVerifier(keys)
    good = sign_request(keys, "POST", PATH, b"{}", now=NOW)
    verifier.check_headers(dict(good), now=NOW)
    bad: list[tuple[dict[str, str | None], str]] = [
        ({}, "not signed"),
        ({**good, NODE: None}, "not signed"),
        ({**good, "X-PyArchive-Timestamp": "12a"}, "malformed"),
        ({**good, "X-PyArchive-Nonce": "n" * 65}, "malformed"),
        ({**good, "X-PyArchive-Signature": "short"}, "malformed"),
        ({**good, NODE: "b"}, "another node"),
        (dict(sign_request(keys, "POST", PATH, b"{}", now=NOW - 60)), "expired"),
    ]
    for headers, refusal in bad:
        with pytest.raises(Forbidden, match=refusal):
            verifier.check_headers(headers, now=NOW)
    verifier.verify("POST", PATH, hashlib.sha256(b"{}").hexdigest(), dict(good), now=NOW)
    with pytest.raises(Forbidden, match="already used"):  # a replay is refused at its headers
        verifier.check_headers(dict(good), now=NOW)


def test_a_download_token_is_good_only_at_the_node_whose_key_signed_it() -> None:
    a, b = NodeKeys.for_node(SECRET, "a"), NodeKeys.for_node(SECRET, "b")
    grant = DownloadGrant(replica_key(1, "ab" * 32), "a", "f.bin", int(NOW + 60))
    assert verify_download_token(a, issue_download_token(a, grant), now=NOW) == grant
    with pytest.raises(ValueError):  # the proxy never signs a grant with the wrong node's key
        issue_download_token(b, grant)
    # What a compromised node b could mint for node a with its own key: refused by a.
    minted = jwt.encode({"r": grant.replica, "n": "a", "f": "f", "exp": grant.expires},
                        b.download, algorithm="HS256")  # fmt: skip
    with pytest.raises(Forbidden, match="Invalid download token"):
        verify_download_token(a, minted, now=NOW)


def test_a_node_given_the_cluster_secret_keeps_only_its_own_keys() -> None:
    config = NodeConfig(name="a", cluster_secret=SECRET)
    config.check()
    assert config.keys() == NodeKeys.for_node(SECRET, "a")
    assert NodeConfig(name="a", node_key=node_key(SECRET, "a")).keys() == config.keys()
    kept = config.without_secrets()
    assert (kept.cluster_secret, kept.node_key, kept.name) == ("", "", "a")
