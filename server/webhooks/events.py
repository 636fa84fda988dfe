"""Webhook events in OpenAI's shape, and the Standard Webhooks signature over them.

An event is ``{"id": "evt_…", "object": "event", "created_at": …, "type": …, "data": {…}}``,
as the openai SDK's ``types/webhooks`` models read it. The signature is what the SDK's
``webhooks.verify_signature()`` checks: ``webhook-signature: v1,<base64 HMAC-SHA256>`` of
``"{webhook-id}.{webhook-timestamp}.{body}"``, keyed by the base64 after ``whsec_``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from ..settings.options import WEBHOOK_SECRET_PREFIX

# The batch events of OpenAI's webhooks (the openai SDK's BatchCompletedWebhookEvent and its siblings).
EVENT_TYPES = frozenset({"batch.completed", "batch.failed", "batch.cancelled", "batch.expired"})


@dataclass(frozen=True)
class Event:
    id: str  # evt_…: the event's own id, in the body
    webhook_id: str  # wh_…: the message id in the webhook-id header, the same on every attempt
    type: str
    body: bytes  # the JSON sent, byte for byte what is signed


def new_event(event_type: str, data: dict[str, object]) -> Event:
    """An event of ``event_type`` about ``data``; a type outside :data:`EVENT_TYPES` is a programming error."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r} (known: {', '.join(sorted(EVENT_TYPES))})")
    event_id = "evt_" + secrets.token_hex(16)
    payload = {"id": event_id, "object": "event", "created_at": int(time.time()), "type": event_type, "data": data}
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Event(event_id, "wh_" + secrets.token_hex(16), event_type, body)


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (already checked by the settings)."""
    return base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)


def signed_headers(event: Event, key: bytes, timestamp: int) -> dict[str, str]:
    """The headers of one attempt: its own timestamp (receivers refuse stale ones), the event's webhook id."""
    signed = f"{event.webhook_id}.{timestamp}.".encode() + event.body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "content-type": "application/json",
        "webhook-id": event.webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }
