"""Checks on a JSON document's raw bytes around its parse: how deep it nests, and whether a key
repeats (a parser keeps the last value of a repeated key; a billing contract must not guess).

Both are fast for the usual flat record (no parser call), linear on garbage, and never recurse
unbounded: the depth is counted before any parse, so the repeated-key check, which parses, only
sees bounded nesting. Used by the usage bus contract (`adapters.nats.usage_contract`).
"""

from __future__ import annotations

import json
import re
from typing import Any

# A JSON string, terminated or running to the end (so the scan is linear even on garbage).
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


def json_depth(payload: bytes) -> int:
    """How deep arrays and objects nest in `payload`, read from the raw bytes without parsing
    (brackets inside strings do not count). Fast for the usual flat record."""
    if b"[" not in payload and payload.count(b"{") <= 1:
        return 1 if b"{" in payload else 0
    brackets = _JSON_STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def duplicate_key(payload: bytes, keys_read: int) -> str | None:
    """A key that occurs twice in the flat JSON object `payload`, or None.

    `keys_read` is how many distinct keys the schema found. Fast path: the members of a flat
    object are separated by commas, so with no more commas than `keys_read - 1` there are no
    more members than distinct keys: no duplicate. Only when strings hold commas (or a key
    repeats) is the payload parsed again, keeping every key (depth is already bounded).
    Raises ValueError if that parse fails: then nobody can say, and the caller must refuse."""
    if payload.count(b",") < keys_read:
        return None
    try:
        json.loads(payload, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as error:
        return str(error)
    except RecursionError:
        raise ValueError("nested too deep") from None
    return None
