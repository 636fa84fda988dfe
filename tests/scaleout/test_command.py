"""``easel serve --ray`` as a user runs it, here against the session's Ray instance named by ``RAY_ADDRESS``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import ray
from openai import OpenAI
from ray import serve

from server.scaleout.launch import APP_NAME
from tests.conftest import FAST, TINY

from .conftest import wait_until

REPO = Path(__file__).resolve().parents[2]


def test_the_command_serves_on_the_cluster_in_ray_address_until_sigterm(
    serve_port: int, tiny_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    # The session's Serve instance already listens on serve_port; a second one cannot take another port.
    command = [sys.executable, "-m", "server", "--ray", "--replicas", "1", "--port", str(serve_port)]
    command += ["--model", f"{TINY}=kandinsky22:{tiny_model_dirs['kandinsky']}", "--image-dir", str(tmp_path)]
    log = (tmp_path / "command.log").open("w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{serve_port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "command.log").read_text()
            try:
                return httpx.get(url + "/health/ready", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 600, "the command's app to be ready")  # bounds a hang: loaded, replicas start slowly
        client = OpenAI(base_url=url + "/v1", api_key="any", max_retries=0)
        answer = client.images.generate(prompt="a red circle", size="64x64", extra_body={"seed": 1, **FAST})
        assert httpx.get(answer.data[0].url, timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, (tmp_path / "command.log").read_text()
    assert APP_NAME not in serve.status().applications  # the command deleted its application
