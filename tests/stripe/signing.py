"""Signing webhook payloads as Stripe does (HMAC-SHA256 over `t.body`), for deliveries that
localstripe never sends (refunds) and for forged ones."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    moment = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + payload,
                      hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


def event_payload(event_id: str, event_type: str, data_object: dict[str, Any]) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": event_type,
                       "created": int(time.time()), "data": {"object": data_object}},
                      indent=2, sort_keys=True).encode()
