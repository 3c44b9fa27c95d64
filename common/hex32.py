"""Thirty-two lowercase hex digits: the shape of upload and file ids (``uuid4().hex``) and of
md5 digests as the nodes take them.

``HEX32`` is the text of the pattern, for building larger patterns (a URL path, a bytes
pattern, a JSON schema); ``is_hex32`` is the check every other caller wants.
"""

from __future__ import annotations

import re
from typing import TypeGuard

HEX32 = "[0-9a-f]{32}"
_HEX32 = re.compile(HEX32)


def is_hex32(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string of exactly 32 lowercase hex digits.

    >>> is_hex32("0123456789abcdef0123456789abcdef")
    True
    >>> is_hex32("0123456789ABCDEF0123456789ABCDEF"), is_hex32("0" * 31), is_hex32(None)
    (False, False, False)
    """
    return isinstance(value, str) and _HEX32.fullmatch(value) is not None
