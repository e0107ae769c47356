"""Secret keys kept in files apart from what they protect: a device's store key, the
operator's checkpoint key. 32 raw bytes, or 64 hex digits (a newline allowed)."""

from __future__ import annotations

from pathlib import Path

KEY_BYTES = 32


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or not a key; the message names the file."""


def read_key_file(path: str | Path) -> bytes:
    """The 32-byte key in ``path``: 32 raw bytes, or 64 hex digits."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file ({exc.strerror})") from None
    if len(raw) == KEY_BYTES:
        return raw
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path}: a key file holds 32 raw bytes or 64 hex digits "
                           f"(found {len(raw)} bytes)")
    return key
