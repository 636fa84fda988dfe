"""How a model's status on Ray follows Serve's state (server/scaleout/serve_state.py), case by case.

The local Ray instance shows the common path (tests/scaleout/test_scale_to_zero.py); the cases it cannot
bring about on demand (Serve failing to start a replica, a replica starting without a request) are here.
"""

from __future__ import annotations

import pytest

from server.scaleout.serve_state import ReplicaView, next_status, preloaded_models


def view(running: int = 0, starting: int = 0, failure: str | None = None, lowest: int = 0) -> ReplicaView:
    return ReplicaView(
        running={f"r{number}": 0.0 for number in range(running)},
        starting=frozenset(f"s{number}" for number in range(starting)),
        stopping=0,
        min_replicas=lowest,
        max_replicas=2,
        failure=failure,
    )


@pytest.mark.parametrize(
    ("status", "info_known", "serve", "own_loading", "becomes"),
    [
        ("ready", True, view(), False, "unloaded"),  # scaled down to zero
        ("ready", True, view(running=1), False, None),
        ("unloaded", True, view(starting=1), False, "loading"),  # Serve starts one (another ingress's request)
        ("unloaded", True, view(running=1), False, "ready"),  # known here: requests go straight to it
        ("unloaded", False, view(running=1), False, None),  # unknown here: the first request asks the replica
        ("loading", False, view(), False, None),  # a request's load, before Serve has started the replica
        ("loading", False, view(), True, "unloaded"),  # a start this ingress only watched, given up
        ("loading", True, view(running=1), False, "ready"),
        ("loading", False, view(running=1), False, None),  # the request's load sets it ready with what it learns
        ("ready", True, view(failure="replica constructor failed"), False, "failed"),
        ("loading", False, view(failure="replica constructor failed"), False, "failed"),
        ("failed", True, view(failure="replica constructor failed"), False, None),
        ("failed", True, view(running=1), False, None),  # the loader's own failure: that replica holds the error
        ("unloaded", False, view(starting=1, failure="replica constructor failed"), False, "failed"),
    ],
)
def test_the_status_follows_serve_s_replicas(status, info_known, serve, own_loading, becomes) -> None:
    assert next_status(status, info_known, serve, own_loading=own_loading) == becomes


def test_the_preloaded_models_are_those_whose_deployment_keeps_a_replica() -> None:
    views = {"at-zero": view(lowest=0), "kept": view(lowest=1), "fixed": view(lowest=2)}
    assert preloaded_models(views) == ("kept", "fixed")
    assert view(running=1, starting=1).as_json() == {"running": 1, "starting": 1, "stopping": 0, "min": 0, "max": 2}
