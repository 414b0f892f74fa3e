"""Keyed identifier hashing: the same pseudonym for the same id, and the key it is made with.

An id that holds PII is stored as :func:`safe_identifier`, its keyed hash. The key is the one configured for id
hashing when there is one, else ``$CL_PLUGIN_HASH_KEY``, else a random key generated once and kept in a file
(:func:`id_hash_key`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from cl_plugin.config import (
    HASH_KEY_ENV,
)
from cl_plugin.errors import PrivacyConfigError

__all__ = ["HASH_KEY_FILE_ENV", "hash_identifier", "id_hash_key"]

log = logging.getLogger("cl_plugin.privacy")

_HASHED = re.compile(r"h:[0-9a-f]{32}")


def hash_identifier(value: str, key: str | bytes) -> str:
    """Pseudonymize an identifier with a keyed HMAC-SHA256.

    The result is ``"h:"`` plus 32 hex characters, the same for the same value and key. A value already in
    that form is returned unchanged, so hashing twice is harmless.

    Args:
        value: the identifier (user id, session id).
        key: the secret HMAC key.

    Raises:
        PrivacyConfigError: the key is empty.
    """
    if _HASHED.fullmatch(value):
        return value
    if not key:
        raise PrivacyConfigError(
            "hash_identifier needs a non-empty key; set privacy.hash_key or $CL_PLUGIN_HASH_KEY"
        )
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    digest = hmac.new(key_bytes, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return "h:" + digest[:32]


HASH_KEY_FILE_ENV = "CL_PLUGIN_HASH_KEY_FILE"
"""The environment variable naming the file that keeps the generated id hashing key (:func:`id_hash_key`)."""


def id_hash_key() -> str:
    """The key that hashes ids holding PII when none is configured for id hashing.

    ``$CL_PLUGIN_HASH_KEY`` when set. Otherwise a random 256-bit key, generated on first use and kept in the
    file named by ``$CL_PLUGIN_HASH_KEY_FILE`` (default ``$XDG_DATA_HOME/cl_plugin/id-hash.key``, that is
    ``~/.local/share/cl_plugin/id-hash.key``), readable by its owner only, so an id maps to the same hash
    across restarts and processes of one host. Several hosts writing one database must share one key: set
    ``CL_PLUGIN_HASH_KEY`` on each. If the file can be neither read nor created, a key for this process only
    is used and a warning logged: ids still never reach the store as given, but map to new hashes after a
    restart.
    """
    return os.environ.get(HASH_KEY_ENV) or _file_key(os.fspath(_key_path()))


def _key_path() -> Path:
    named = os.environ.get(HASH_KEY_FILE_ENV)
    if named:
        return Path(named)
    try:
        data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    except RuntimeError:  # no home directory: the key cannot be kept
        return Path()
    return data / "cl_plugin" / "id-hash.key"


@functools.cache
def _file_key(path: str) -> str:
    try:
        return _read_or_create_key(Path(path))
    except (OSError, ValueError) as exc:
        log.warning(
            "the id hashing key file %s cannot be used (%s); ids holding PII are hashed with a key for this "
            "process only, so they change after a restart: set %s, or %s to a writable file",
            path,
            exc,
            HASH_KEY_ENV,
            HASH_KEY_FILE_ENV,
        )
        return secrets.token_hex(32)


def _read_or_create_key(path: Path) -> str:
    """The key kept in ``path``, created (owner-only, atomically) when the file does not exist."""
    if path.is_dir() or not path.name:
        raise ValueError("it is a directory")
    try:
        return _key_text(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and exclusive: of two processes creating the key, one wins
            log.warning(
                "generated a key for hashing ids that hold PII, kept in %s; set %s to one secret on every "
                "host that writes the same database",
                path,
                HASH_KEY_ENV,
            )
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _key_text(path)


def _key_text(path: Path) -> str:
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise ValueError("it is empty")
    return key
