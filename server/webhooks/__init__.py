"""Signed webhooks: an event to every configured URL, signed by the Standard Webhooks scheme, with retries.

:class:`Webhooks` is the one entry point: ``emit(event_type, data)`` from any
thread, never blocking, or ``record(db, event_type, data)`` inside the batch store's
transaction, kept on disk until delivered; ``start()``/``stop()`` from the app's lifespan
(docs/webhooks.md).
"""

from .events import EVENT_TYPES
from .journal import OUTBOX_SCHEMA
from .outbox import Webhooks
from .sending import WebhookMetrics

__all__ = ["EVENT_TYPES", "OUTBOX_SCHEMA", "WebhookMetrics", "Webhooks"]
