"""``GET /metrics``: Prometheus text format (:mod:`server.observe.metrics`); needs the API key when keys are set."""

from __future__ import annotations

from starlette.routing import Route

from ..observe.metrics import serve_metrics

routes = [Route("/metrics", serve_metrics, methods=["GET"])]
