"""Interactive requests sent while a batch runs: answered while its lines are still running, and every line still
answered once with the synchronous bytes, though running lines pause or give their slot up (and run again)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
from openai import OpenAI

from ..conftest import TINY, running_server, tiny_settings
from .test_batches import GENERATIONS, request_line, upload, wait_for_end, without_created

LINE_STEPS = {"prior_steps": 2, "decoder_steps": 60}  # lines that run long enough to be caught mid-call


def body(seed: int) -> dict:
    return {"model": TINY, "prompt": f"a blue square {seed}", "size": "64x64", "seed": seed,
            "response_format": "b64_json", **LINE_STEPS}  # fmt: skip


def test_interactive_requests_pass_a_running_batch_whose_lines_keep_their_bytes(
    tiny_model_dirs: dict[str, Path], tmp_path: Path
):
    # One image a call on one slot (the reproducible setting): every interactive request finds the only slot
    # running a batch line, which must give it up.
    settings = tiny_settings(tiny_model_dirs, data_dir=tmp_path / "data", max_batch_images=1, workers=1)
    with running_server(settings) as live:
        sdk = OpenAI(base_url=live.api_url, api_key="any", max_retries=0)
        bodies = {f"line-{seed}": body(seed) for seed in range(4)}
        lines = [request_line(custom_id, line_body) for custom_id, line_body in bodies.items()]
        batch = sdk.batches.create(input_file_id=upload(sdk, lines), endpoint=GENERATIONS, completion_window="24h")
        while sdk.batches.retrieve(batch.id).status != "in_progress":
            time.sleep(0.05)
        passed = 0  # interactive answers that came while the batch still had lines to answer
        for seed in range(100, 103):
            answer = sdk.images.generate(model=TINY, prompt="a red circle", size="64x64", response_format="b64_json",
                                         extra_body={"seed": seed, "prior_steps": 2, "decoder_steps": 2})  # fmt: skip
            assert len(base64.b64decode(answer.data[0].b64_json)) > 0
            passed += sdk.batches.retrieve(batch.id).status == "in_progress"
        assert passed >= 1
        metrics = httpx.get(f"{live.url}/metrics", timeout=30).text
        requeued = [line for line in metrics.splitlines() if line.startswith("easel_batch_jobs_requeued_total{")]
        assert requeued and float(requeued[0].split()[-1]) >= 1  # a running line did give its slot up
        done = wait_for_end(sdk, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 4
        answered = [json.loads(line) for line in sdk.files.content(done.output_file_id).text.splitlines()]
        assert sorted(line["custom_id"] for line in answered) == sorted(bodies)
        for line in answered:
            synchronous = httpx.post(f"{live.api_url}/images/generations", json=bodies[line["custom_id"]], timeout=60)
            assert without_created(line["response"]["body"]) == without_created(synchronous.json())
