"""Refusing a cluster secret that others know or could guess, before a proxy or node starts.

The cluster secret signs every internal call and download token and yields the rsync
password, so a proxy or node started with a short one, or with one printed in a public file
(the old docker-compose default, an example), is open to anyone who reads that file. Both
refuse to start with one clear line instead.
"""

from __future__ import annotations

from common.config import ConfigError

MIN_LENGTH = 32
HOW_TO_MAKE_ONE = "make one with: openssl rand -base64 48"

# Values printed in this project's public files that someone may have copied: the
# docker-compose defaults before the file required its secrets. (The example config files and
# the README show no value, or ones far shorter than MIN_LENGTH.) Anything starting with
# "change-me" is refused too: it is a placeholder by its own words.
PUBLISHED = frozenset(
    {
        "change-me-this-default-cluster-secret-is-public",
        "change-me-this-default-s3-secret-is-public",
    }
)


def check_cluster_secret(secret: str, setting: str = "cluster_secret") -> None:
    """Raise ConfigError, naming ``setting`` but never the value, for a secret too short or
    published; say how to make a good one.

    >>> check_cluster_secret("x" * 40)
    >>> check_cluster_secret("hunter2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    common.config.ConfigError: cluster_secret is too short (7 characters, at least 32 ...
    >>> check_cluster_secret("change-me-" + "x" * 40)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    common.config.ConfigError: cluster_secret is a published example value, known to ...
    """
    if len(secret) < MIN_LENGTH:
        raise ConfigError(
            f"{setting} is too short ({len(secret)} characters, at least {MIN_LENGTH} are "
            f"needed): {HOW_TO_MAKE_ONE}"
        )
    if secret in PUBLISHED or secret.lower().startswith("change-me"):
        raise ConfigError(
            f"{setting} is a published example value, known to anyone: {HOW_TO_MAKE_ONE}"
        )
