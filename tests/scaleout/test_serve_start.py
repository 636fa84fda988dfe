"""Serve's start on a busy machine: ``serve.start`` gives its HTTP proxies a fixed 60 s, and Easel waits on
for a proxy that is still starting rather than failing the command (or the test session's Ray instance)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("ray", reason="the scale-out tests need the ray extra: pip install -e '.[ray]'")

from ray.serve.schema import ProxyStatus

from server.scaleout import launch


class SlowProxies:
    """``serve.start`` and ``serve.status`` of a Serve whose proxy reports healthy only at the ``ready_at``-th look."""

    def __init__(self, ready_at: int, first_start_times_out: bool = True) -> None:
        self.ready_at = ready_at
        self.starts: list[dict] = []
        self.looks = 0
        self.first_start_times_out = first_start_times_out

    def start(self, http_options: dict) -> None:
        self.starts.append(http_options)
        if self.first_start_times_out and len(self.starts) == 1:
            raise TimeoutError("HTTP proxies not available after 60s.")

    def status(self) -> SimpleNamespace:
        self.looks += 1
        state = ProxyStatus.HEALTHY if self.looks >= self.ready_at else ProxyStatus.STARTING
        return SimpleNamespace(proxies={"node-1": state})


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr(launch.time, "sleep", lambda seconds: None)


def test_a_proxy_still_starting_after_serve_start_gave_up_is_waited_for(monkeypatch, no_sleep, caplog):
    serve = SlowProxies(ready_at=3)
    monkeypatch.setattr(launch, "serve", serve)
    launch.start_serve("127.0.0.1", 8123, patience=60)
    assert serve.starts == [{"host": "127.0.0.1", "port": 8123}] * 2  # the second call connects to its controller
    assert serve.looks == 3
    assert "not up after 60 s" in caplog.text


def test_a_proxy_up_in_time_is_not_looked_at_again(monkeypatch, no_sleep):
    serve = SlowProxies(ready_at=1, first_start_times_out=False)
    monkeypatch.setattr(launch, "serve", serve)
    launch.start_serve("127.0.0.1", 8123)
    assert (len(serve.starts), serve.looks) == (1, 0)


def test_a_proxy_that_never_starts_fails_the_start_after_the_patience(monkeypatch, no_sleep):
    serve = SlowProxies(ready_at=10**9)
    monkeypatch.setattr(launch, "serve", serve)
    with pytest.raises(TimeoutError, match="did not start in 0 s"):
        launch.start_serve("127.0.0.1", 8123, patience=0.0)
