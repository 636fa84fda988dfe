"""``GET /metrics``: Prometheus text format (:mod:`server.metrics`); needs the API key when keys are configured."""

from __future__ import annotations

from starlette.routing import Route

from ..metrics import serve_metrics

routes = [Route("/metrics", serve_metrics, methods=["GET"])]
