"""Ray Serve: the controller's details of every application, each replica by id.

``serve.status()`` gives each deployment's replica counts by state, but not its replicas' ids (which tell a
replica that started from one that stopped) nor its autoscaling bounds. The details it is built from carry
both; Serve's client asks the controller for them, which its public API does not expose
(``server/scaleout/serve_state.py`` reads them).
"""

from __future__ import annotations

from typing import Any

from .versions import VersionRange, check

TESTED = VersionRange("ray", "2.60", "2.61", "ray.serve.context._get_global_client().get_serve_details()", __name__)


def serve_details() -> Any:
    """``ray.serve.schema.ServeInstanceDetails`` from Serve's controller (blocking: a Ray call)."""
    check(TESTED)
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    client = _get_global_client()
    return ServeInstanceDetails(**client.get_serve_details())
