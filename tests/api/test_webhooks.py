"""Webhooks through a real server: settings in, signed events out to every URL, serving never held up.

The receivers: one that records requests (the events are unwrapped here with the openai SDK),
the shipped example ``examples/webhook_receiver.py`` as a process of its own, and one that
never answers.
"""

from __future__ import annotations

import base64
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from openai.types.webhooks import BatchCompletedWebhookEvent
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import FAST, LOOPBACK_TLS, TINY, LiveServer, running_server, tiny_settings
from ..webhook_receivers import Recorder, Silent, recording, silent

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"easel-webhook-e2e-key-of-32bytes").decode()


class Example:
    """``examples/webhook_receiver.py`` on a free port; its printed lines arrive on ``lines``."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {**os.environ, "OPENAI_WEBHOOK_SECRET": SECRET}
        command = [sys.executable, str(REPO / "examples/webhook_receiver.py"), "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        deadline = time.monotonic() + 60
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the example receiver did not start")
            time.sleep(0.05)

    def _listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))


class Setup:
    def __init__(self, live: LiveServer, recorder: Recorder, example: Example, stuck: Silent) -> None:
        self.live, self.recorder, self.example, self.stuck = live, recorder, example, stuck


@pytest.fixture(scope="module")
def setup(tiny_model_dirs) -> Iterator[Setup]:
    example = Example()
    try:
        with recording() as recorder, silent() as stuck:
            urls = (recorder.url, example.url, stuck.url)
            settings = tiny_settings(tiny_model_dirs, webhook_urls=urls, webhook_secret=SECRET)
            with running_server(settings) as live:
                yield Setup(live, recorder, example, stuck)
    finally:
        example.process.terminate()
        example.process.wait(timeout=30)


def delivered(live: LiveServer, event_type: str) -> float:
    text = httpx.get(live.url + "/metrics", timeout=10, verify=LOOPBACK_TLS).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "easel_webhook_deliveries_total" and sample.labels == {"event_type": event_type}:
                return sample.value
    return 0.0


def wait_delivered(live: LiveServer, event_type: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while delivered(live, event_type) < count:
        assert time.monotonic() < deadline, f"{event_type}: fewer than {count} deliveries counted"
        time.sleep(0.05)


def test_a_server_sends_each_event_signed_to_every_configured_url(setup: Setup):
    setup.live.state.webhooks.emit("batch.completed", {"id": "batch_e2e"})
    (received,) = setup.recorder.wait_for(1)
    event = OpenAI(api_key="unused", base_url=setup.live.api_url).webhooks.unwrap(
        received.body, received.headers, secret=SECRET
    )
    assert isinstance(event, BatchCompletedWebhookEvent) and event.data.id == "batch_e2e"
    # The example receiver checked the same event with the SDK, from OPENAI_WEBHOOK_SECRET, and printed it.
    assert setup.example.lines.get(timeout=60) == f"batch.completed batch_e2e {event.id}"
    wait_delivered(setup.live, "batch.completed", 2)  # the recorder and the example; the third never answers
    assert delivered(setup.live, "batch.completed") == 2
    forged = httpx.post(setup.example.url, content=received.body, headers={**received.headers, "webhook-id": "wh_x"})
    assert forged.status_code == 400 and setup.example.lines.empty()


def test_a_receiver_that_never_answers_does_not_hold_up_serving(setup: Setup):
    setup.live.state.webhooks.emit("batch.failed", {"id": "batch_stuck"})
    setup.stuck.wait_for(1)  # a delivery is waiting on the receiver that never answers
    client = OpenAI(base_url=setup.live.api_url, api_key="unused", max_retries=0, timeout=120)
    image = client.images.generate(prompt="a red circle", model=TINY, size="256x256", extra_body=FAST)
    assert len(image.data) == 1
    assert setup.live.state.webhooks.pending() >= 1  # still waiting there, or retrying, while the image was made
    wait_delivered(setup.live, "batch.failed", 2)  # the other receivers got theirs all the same
    assert setup.stuck.connections and setup.live.state.webhooks.pending() >= 1
