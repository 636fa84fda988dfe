"""``easel serve --ray``: the API on Ray Serve, on a local Ray instance or the cluster in ``RAY_ADDRESS``.

Like ``serve run``, the application lives as long as the command: Ctrl-C or
SIGTERM deletes it (and stops the local Ray instance this command started).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve
from ray.serve.schema import ProxyStatus

from ..serving.models import LoadFailed
from ..settings.config import Settings
from .deployments import build_app

log = logging.getLogger("easel.scaleout")

APP_NAME = "easel"
# Ray's HTTP proxy reads this when it starts (docs/ray.md, "Headers").
PROXY_CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "server.scaleout.proxy.proxy_middlewares"
# Serve kills an HTTP proxy that has not reported ready within 5 s, and serve.start then fails; a busy machine
# takes longer than that to start the proxy's Python process (minutes, with every core taken).
PROXY_READY_VARIABLE = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
PROXY_READY_SECONDS = "300"
# serve.start waits a fixed 60 s for its proxies, then fails though they are still starting; start_serve waits on.
PROXY_START_SECONDS = 600.0


def use_easel_proxy_middleware() -> None:
    """Make the HTTP proxies of a Ray instance started from this process answer as plain Easel does."""
    os.environ.setdefault(PROXY_CALLBACK_VARIABLE, PROXY_CALLBACK)


def give_proxies_time_to_start() -> None:
    """Let a Ray instance started from this process wait for its HTTP proxies as long as serve.start does."""
    os.environ.setdefault(PROXY_READY_VARIABLE, PROXY_READY_SECONDS)


def start_serve(host: str, port: int, patience: float = PROXY_START_SECONDS) -> None:
    """``serve.start``, waiting up to ``patience`` seconds for the HTTP proxies where a busy machine starts them
    after serve.start's own 60 s."""
    options = {"host": host, "port": port}
    try:
        serve.start(http_options=options)
        return
    except TimeoutError:
        log.warning("Ray Serve's HTTP proxy is not up after 60 s (a busy machine?): waiting up to %.0f s", patience)
    deadline = time.monotonic() + patience
    serve.start(http_options=options)  # the controller the first call started: returns without waiting
    while not _proxies_up():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray Serve's HTTP proxies did not start in {patience:.0f} s")
        time.sleep(0.5)


def _proxies_up() -> bool:
    proxies = serve.status().proxies
    return bool(proxies) and all(status == ProxyStatus.HEALTHY for status in proxies.values())


@contextlib.contextmanager
def running_on_ray(settings: Settings, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Iterator[str]:
    """Deploy the app on the connected Ray cluster (Serve listening on ``settings.host:port``); yields its URL."""
    start_serve(settings.host, settings.port)
    serve.run(build_app(settings, overrides), name=APP_NAME, route_prefix="/")
    try:
        yield f"http://{settings.host}:{settings.port}"
    finally:
        serve.delete(APP_NAME)


def serve_on_ray(settings: Settings, *, on_load_failure: LoadFailed | None = None) -> None:
    """Run until SIGINT or SIGTERM (``server.__main__`` calls this for ``--ray``).

    ``on_load_failure(name, message)`` hears of each model that failed to load, and the command then stops
    (as plain ``easel serve`` does without ``--keep-going``).
    """
    own_image_dir = settings.image_dir is None
    image_dir = Path(tempfile.mkdtemp(prefix="easel-images-")) if own_image_dir else settings.image_dir
    assert image_dir is not None
    settings = replace(settings, image_dir=image_dir, use_ray=True)
    use_easel_proxy_middleware()
    give_proxies_time_to_start()
    ray.init(logging_level=settings.log_level.upper())  # RAY_ADDRESS, when set, names the cluster
    # After ray.init, whose own SIGTERM handler would abort the process without deleting the app.
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    try:
        with running_on_ray(settings) as url:
            log.info("Easel on Ray Serve at %s (images in %s); Ctrl-C stops it", url, image_dir)
            failed = _load_failures(url, stop)
            if failed and on_load_failure is not None:
                for name, message in failed.items():
                    on_load_failure(name, message)
                stop.set()
            while not stop.wait(1.0):
                pass
            log.info("stopping: deleting the Serve application (running jobs get --shutdown-timeout to finish)")
    finally:
        ray.shutdown()
        if own_image_dir:
            shutil.rmtree(image_dir, ignore_errors=True)


def _load_failures(url: str, stop: threading.Event) -> dict[str, str]:
    """Once no model is loading any more: each failed model's message, from the app's readiness."""
    while not stop.is_set():
        try:
            models = httpx.get(url + "/health/ready", timeout=10).json().get("models", {})
        except (httpx.HTTPError, ValueError):  # the proxy is not routing to the app yet
            models = {}
        if models and all(item["status"] != "loading" for item in models.values()):
            return {name: item.get("error", "") for name, item in models.items() if item["status"] == "failed"}
        stop.wait(0.5)
    return {}
