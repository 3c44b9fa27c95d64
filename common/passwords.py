"""Password hashing with argon2 (argon2-cffi), and the rules a new password must meet."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from common.errors import BadRequest

# OWASP's argon2id profile (19 MiB, 2 passes): argon2-cffi's default takes 64 MiB per hash,
# which would make one login the largest allocation in the proxy's life.
MEMORY_KIB = 19 * 1024
_hasher = PasswordHasher(time_cost=2, memory_cost=MEMORY_KIB, parallelism=1)
# Verified when the user does not exist, so an unknown name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password anyone has")

MIN_LENGTH = 8


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; ``stored_hash=None`` (no such user) takes as long and fails."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def check_password_strength(password: object, username: str) -> str:
    """Return the password if it is acceptable, otherwise raise BadRequest saying why."""
    if not isinstance(password, str) or not password:
        raise BadRequest("password is required", field="password")
    if len(password) < MIN_LENGTH:
        raise BadRequest(
            f"password is too short: at least {MIN_LENGTH} characters", field="password"
        )
    if len(password) > 1024:
        raise BadRequest("password is too long: at most 1024 characters", field="password")
    if password.isdigit():
        raise BadRequest("password cannot be entirely numeric", field="password")
    if username and username.lower() in password.lower():
        raise BadRequest("password cannot contain the username", field="password")
    if len(set(password)) < 4:
        raise BadRequest("password is too simple: use more different characters", field="password")
    return password
