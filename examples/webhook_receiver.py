"""A webhook receiver for Easel's batch events, checked by the openai SDK exactly as for OpenAI's own webhooks.

    OPENAI_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 9000
    easel serve --webhook-url http://127.0.0.1:9000/hooks --webhook-secret whsec_...

Each event is printed as one line (its type, the batch id, the event id). A bad or stale
signature is answered 400; an event already seen (same ``webhook-id``, a retry whose answer
was lost) is answered 200 again and not printed twice.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from openai import InvalidWebhookSignatureError, OpenAI
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
)

BATCH_EVENTS = (
    BatchCompletedWebhookEvent,
    BatchFailedWebhookEvent,
    BatchCancelledWebhookEvent,
    BatchExpiredWebhookEvent,
)

client = OpenAI(api_key="unused")  # only for webhooks.unwrap; the secret comes from OPENAI_WEBHOOK_SECRET
seen: set[str] = set()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = client.webhooks.unwrap(body, dict(self.headers))
        except InvalidWebhookSignatureError:
            self.answer(400)
            return
        if isinstance(event, BATCH_EVENTS) and self.headers["webhook-id"] not in seen:
            seen.add(self.headers["webhook-id"])
            print(event.type, event.data.id, event.id, flush=True)  # start the real work here, or queue it
        self.answer(200)  # answer fast: the sender waits at most a few seconds

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # keep stdout to the events
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    ThreadingHTTPServer((args.host, args.port), Receiver).serve_forever()


if __name__ == "__main__":
    main()
