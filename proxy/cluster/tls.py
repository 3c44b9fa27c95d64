"""The HTTP client the proxy talks to nodes with: https to nodes whose certificates it trusts.

A node serves https when its ``listen`` is a TLS endpoint string
(``ssl:8443:privateKey=key.pem:certKey=cert.pem``) and staff register it with an ``https://``
URL; downloads are then redirected to that URL too. The proxy checks each node's certificate
and name (``service_identity``, IP addresses included) against the system's trust store, or,
when ``node_ca_file`` is set, against the certificates in that file only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import treq
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from treq.client import HTTPClient
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from common.config import ConfigError


def trusted_certificates(pem: bytes) -> list[Certificate]:
    """The certificates in a PEM text, as Twisted's; ValueError when there is none."""
    found = x509.load_pem_x509_certificates(pem)
    return [Certificate.loadPEM(cert.public_bytes(Encoding.PEM)) for cert in found]


def node_http_client(reactor: Any, ca_file: str) -> Any:
    """treq itself (the system's trust store), or a client trusting only ``ca_file``'s
    certificates. A file that cannot be read or holds no certificate is a ConfigError."""
    if not ca_file:
        return treq
    try:
        certificates = trusted_certificates(Path(ca_file).read_bytes())
    except (OSError, ValueError) as problem:
        raise ConfigError(
            f"node_ca_file: cannot read certificates from {ca_file}: {problem}"
        ) from None
    policy = BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(certificates))
    agent = Agent(reactor, contextFactory=policy, pool=HTTPConnectionPool(reactor))
    return HTTPClient(agent)
