"""Signed webhooks: an event to every configured URL, signed by the Standard Webhooks scheme, with retries.

:class:`Webhooks` is the one entry point: ``emit(event_type, data)`` from any
thread, never blocking; ``start()``/``stop()`` from the app's lifespan
(docs/webhooks.md).
"""

from .events import EVENT_TYPES
from .outbox import Webhooks
from .sending import WebhookMetrics

__all__ = ["EVENT_TYPES", "WebhookMetrics", "Webhooks"]
