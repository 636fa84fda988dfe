"""OpenAI's Files and Batch APIs driven by the real openai SDK: uploads, batches run to their end, cancels, lists,
and every line's body the same bytes as the synchronous endpoint's answer for the same seed."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from ..conftest import FAST, SLOW, TINY, LiveServer, assert_envelope, running_server, tiny_settings

GENERATIONS = "/v1/images/generations"


@pytest.fixture(scope="module")
def batch_server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # One image a call on one slot: the setting under which a request's bytes never depend on its neighbours
    # (docs/serving.md, "Reproducibility"), so a line's bytes can be held to the synchronous answer's.
    settings = tiny_settings(
        tiny_model_dirs, data_dir=tmp_path_factory.mktemp("batch-data"), max_batch_images=1, workers=1
    )
    with running_server(settings) as live:
        yield live


@pytest.fixture
def sdk(batch_server: LiveServer) -> OpenAI:
    return OpenAI(base_url=batch_server.api_url, api_key="any", max_retries=0)


def generation_body(seed: int, **extra: object) -> dict:
    return {"model": TINY, "prompt": f"a red circle {seed}", "size": "64x64", "seed": seed,
            "response_format": "b64_json", **FAST, **extra}  # fmt: skip


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def request_line(custom_id: str, body: dict, url: str = GENERATIONS) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def upload(sdk: OpenAI, lines: list[dict], name: str = "batch.jsonl") -> str:
    return sdk.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch").id


def wait_for_end(sdk: OpenAI, batch_id: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.1)


def without_created(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "created"}


def test_files_create_retrieve_list_content_delete(sdk: OpenAI):
    data = jsonl([request_line("a", generation_body(1))])
    created = sdk.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    assert (created.object, created.bytes, created.filename, created.purpose) == (
        "file",
        len(data),
        "in.jsonl",
        "batch",
    )
    assert created.status == "processed" and created.id.startswith("file-")
    assert created.expires_at == created.created_at + 30 * 86400  # batch files: 30 days, as OpenAI's
    assert sdk.files.retrieve(created.id) == created
    assert sdk.files.content(created.id).content == data
    assert created.id in [f.id for f in sdk.files.list(purpose="batch")]
    kept = sdk.files.create(
        file=("pic.png", io.BytesIO(b"\x89PNG")),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert kept.expires_at == kept.created_at + 3600
    deleted = sdk.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(NotFoundError):
        sdk.files.retrieve(created.id)


def test_files_list_pages_in_order(sdk: OpenAI):
    ids = [sdk.files.create(file=(f"{i}.png", io.BytesIO(b"x")), purpose="vision").id for i in range(3)]
    newest_first = [f.id for f in sdk.files.list(purpose="vision", limit=1)]  # auto-paging, one a page
    assert newest_first[:3] == ids[::-1]
    oldest_first = [f.id for f in sdk.files.list(purpose="vision", order="asc")]
    assert oldest_first[-3:] == ids


def test_a_batch_answers_each_line_with_the_synchronous_bytes(sdk: OpenAI, batch_server: LiveServer):
    bodies = {f"line-{seed}": generation_body(seed) for seed in (11, 12, 13)}
    refused = generation_body(14, n=0)
    lines = [request_line(custom_id, body) for custom_id, body in bodies.items()] + [request_line("bad", refused)]
    batch = sdk.batches.create(
        input_file_id=upload(sdk, lines), endpoint=GENERATIONS, completion_window="24h", metadata={"job": "test"}
    )
    assert (batch.object, batch.endpoint, batch.completion_window, batch.metadata) == (
        "batch",
        GENERATIONS,
        "24h",
        {"job": "test"},
    )
    assert batch.status in ("validating", "in_progress") and batch.request_counts.total == 4
    done = wait_for_end(sdk, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 3, 1)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.expires_at
    assert done.model == TINY
    output = [json.loads(line) for line in sdk.files.content(done.output_file_id).text.splitlines()]
    assert [line["custom_id"] for line in output] == list(bodies)
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
        synchronous = httpx.post(
            f"{batch_server.api_url}/images/generations", json=bodies[line["custom_id"]], timeout=60
        )
        assert without_created(line["response"]["body"]) == without_created(synchronous.json())
    errors = [json.loads(line) for line in sdk.files.content(done.error_file_id).text.splitlines()]
    assert [line["custom_id"] for line in errors] == ["bad"]
    assert errors[0]["response"]["status_code"] == 400
    sync_error = httpx.post(f"{batch_server.api_url}/images/generations", json=refused, timeout=60).json()
    assert errors[0]["response"]["body"] == sync_error
    assert sdk.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_batches_list_pages_newest_first(sdk: OpenAI):
    made = [
        sdk.batches.create(input_file_id=upload(sdk, [request_line("x", generation_body(i))]),
                           endpoint=GENERATIONS, completion_window="24h").id
        for i in (21, 22)
    ]  # fmt: skip
    listed = [batch.id for batch in sdk.batches.list(limit=1)]
    assert listed[:2] == made[::-1]
    for batch_id in made:
        wait_for_end(sdk, batch_id)


def test_cancel_stops_a_batch_and_a_finished_one_cannot_be_cancelled(sdk: OpenAI, batch_server: LiveServer):
    lines = [request_line(f"slow-{i}", generation_body(i, **SLOW)) for i in range(40)]
    batch = sdk.batches.create(input_file_id=upload(sdk, lines), endpoint=GENERATIONS, completion_window="24h")
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait_for_end(sdk, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    assert done.request_counts.completed < 40
    response = httpx.post(f"{batch_server.api_url}/batches/{batch.id}/cancel", timeout=10)
    assert_envelope(response, 400, param="batch_id", code="batch_not_cancellable")


def create_refused(batch_server: LiveServer, body: dict) -> dict:
    response = httpx.post(f"{batch_server.api_url}/batches", json=body, timeout=30)
    assert response.status_code == 400, response.text
    return response.json()["error"]


@pytest.mark.parametrize(
    "content, code, words",
    [
        (b"this is not json\n", "invalid_jsonl", "Line 1 of the input file is not JSON"),
        (b"[1, 2]\n", "invalid_line", "Line 1 of the input file is not a JSON object"),
        (jsonl([{"method": "POST", "url": GENERATIONS, "body": {}}]), "missing_custom_id", "Line 1 has no 'custom_id'"),
        (jsonl([request_line("a", {}), request_line("a", {})]), "duplicate_custom_id", "Line 2 repeats custom_id 'a'"),
        (
            jsonl([request_line("a", {}, url="/v1/images/edits")]),
            "mismatched_url",
            "Line 1: 'url' is '/v1/images/edits'",
        ),
        (b"\n\n", "empty_file", "The input file holds no requests"),
    ],
)
def test_a_bad_input_file_is_a_named_400_and_stores_no_batch(
    sdk: OpenAI, batch_server: LiveServer, content: bytes, code: str, words: str
):
    file_id = sdk.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch").id
    before = [batch.id for batch in sdk.batches.list(limit=100)]
    body = {"input_file_id": file_id, "endpoint": GENERATIONS, "completion_window": "24h"}
    error = create_refused(batch_server, body)
    assert (error["param"], error["code"], error["type"]) == ("input_file_id", code, "invalid_request_error")
    assert words in error["message"]
    assert [batch.id for batch in sdk.batches.list(limit=100)] == before


def test_unknown_or_wrong_purpose_files_and_other_endpoints_are_refused(sdk: OpenAI, batch_server: LiveServer):
    body = {"input_file_id": "file-nope", "endpoint": GENERATIONS, "completion_window": "24h"}
    assert create_refused(batch_server, body)["code"] == "file_not_found"
    picture = sdk.files.create(file=("p.png", io.BytesIO(b"png")), purpose="vision").id
    assert create_refused(batch_server, {**body, "input_file_id": picture})["code"] == "invalid_file_purpose"
    good = upload(sdk, [request_line("a", generation_body(1))])
    error = create_refused(batch_server, {**body, "input_file_id": good, "endpoint": "/v1/chat/completions"})
    assert (error["param"], error["code"]) == ("endpoint", "invalid_value")
    with pytest.raises(BadRequestError) as refused:
        sdk.batches.create(input_file_id=good, endpoint=GENERATIONS, completion_window="48h")  # type: ignore[arg-type]
    assert refused.value.body["param"] == "completion_window"  # type: ignore[index]
    assert_envelope(httpx.get(f"{batch_server.api_url}/batches/batch_nope", timeout=10), 404, param="batch_id")


def test_a_batch_file_over_fifty_thousand_lines_is_refused(batch_server: LiveServer):
    content = b"{}\n" * 50_001
    files = {"file": ("big.jsonl", content)}
    response = httpx.post(f"{batch_server.api_url}/files", files=files, data={"purpose": "batch"}, timeout=30)
    assert_envelope(response, 400, param="file", code="too_many_lines")
    response = httpx.post(f"{batch_server.api_url}/files", files=files, data={"purpose": "fine-tune"}, timeout=30)
    assert_envelope(response, 400, param="purpose", code="invalid_value")


def test_edits_name_uploaded_images_by_file_id_in_sync_and_batch_requests(sdk: OpenAI, batch_server: LiveServer):
    made = httpx.post(f"{batch_server.api_url}/images/generations", json=generation_body(31), timeout=60)
    picture = base64.b64decode(made.json()["data"][0]["b64_json"])
    file_id = sdk.files.create(file=("in.png", io.BytesIO(picture)), purpose="vision").id
    edit = {"model": TINY, "prompt": "a blue square", "size": "64x64", "seed": 7, "response_format": "b64_json", **FAST}
    inline = {**edit, "images": [{"image_url": "data:image/png;base64," + base64.b64encode(picture).decode()}]}
    by_id = {**edit, "images": [{"file_id": file_id}]}
    url = f"{batch_server.api_url}/images/edits"
    expected = without_created(httpx.post(url, json=inline, timeout=60).json())
    assert without_created(httpx.post(url, json=by_id, timeout=60).json()) == expected
    lines = [request_line("edit", by_id, url="/v1/images/edits")]
    batch = sdk.batches.create(input_file_id=upload(sdk, lines), endpoint="/v1/images/edits", completion_window="24h")
    done = wait_for_end(sdk, batch.id)
    (line,) = [json.loads(text) for text in sdk.files.content(done.output_file_id).text.splitlines()]
    assert without_created(line["response"]["body"]) == expected
