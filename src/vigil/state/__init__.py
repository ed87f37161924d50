"""Keyed state: key → slot index with TTL, and the versioned snapshot codec (no pickle at rest)."""

from vigil.state.codec import decode, encode
from vigil.state.keyindex import KeyIndex

__all__ = ["KeyIndex", "decode", "encode"]
