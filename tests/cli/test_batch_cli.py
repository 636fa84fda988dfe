"""``easel batch`` as a person runs it: a separate process against a real server that requires an API key.

Submit a JSONL file and follow it to its end, download what the server holds
(byte for byte) and the images in it; a bad file, an unknown batch and a
command-line mistake are each one line and an exit status; Ctrl-C stops the
wait but not the batch, which ``cancel`` then stops.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ..conftest import FAST, SLOW, TEST_KEY, TINY, LiveServer, running_server, tiny_settings
from .conftest import REPO, clean_env, ctrl_c_works, easel

GENERATIONS = "/v1/images/generations"
PROGRESS = re.compile(
    r"^batch_\S+ (validating|in_progress|finalizing|completed): \d+/4 answered \(\d+ completed, \d+ failed\)$"
)


@pytest.fixture(scope="module")
def server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = tiny_settings(tiny_model_dirs, data_dir=tmp_path_factory.mktemp("cli-batch-data"), api_keys=(TEST_KEY,))
    with running_server(settings) as live:
        yield live


@pytest.fixture
def env(tmp_path: Path, server: LiveServer) -> dict[str, str]:
    """A shell's environment naming the server and its key (the flags are tested by one test)."""
    return clean_env(tmp_path / "home", EASEL_BASE_URL=server.url, EASEL_API_KEY=TEST_KEY)


def api(server: LiveServer, method: str, path: str) -> httpx.Response:
    return httpx.request(method, server.api_url + path, headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=30)


def request_line(custom_id: str, **body: object) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": GENERATIONS, "body": body}


def write_jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def generation(seed: int, **extra: object) -> dict:
    return {"model": TINY, "prompt": f"a red circle {seed}", "size": "64x64", "seed": seed,
            "response_format": "b64_json", **FAST, **extra}  # fmt: skip


def test_submit_wait_download_writes_the_servers_files_and_the_images(server: LiveServer, env, tmp_path: Path):
    lines = [request_line(f"shot/{seed}", **generation(seed)) for seed in (1, 2)]
    lines += [request_line("pair", **generation(3, n=2)), request_line("refused", **generation(4, n=0))]
    jsonl = write_jsonl(tmp_path / "shots.jsonl", lines)
    submitted = easel("batch", "submit", str(jsonl), "--metadata", "job=cli", "--metadata", "run=1", "--wait", env=env)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    assert re.fullmatch(r"batch_\S+", batch_id)
    progress = submitted.stderr.splitlines()
    assert all(PROGRESS.match(line) for line in progress), progress  # one plain line per change: no bar off a TTY
    assert "\r" not in submitted.stderr and "\x1b" not in submitted.stderr
    assert progress[-1] == f"{batch_id} completed: 4/4 answered (3 completed, 1 failed)"
    assert len(progress) == len(set(progress))
    batch = api(server, "GET", f"/batches/{batch_id}").json()
    assert (batch["endpoint"], batch["metadata"]) == (GENERATIONS, {"job": "cli", "run": "1"})

    out = tmp_path / "out"
    downloaded = easel("batch", "download", batch_id, "-o", str(out), "--images", env=env)
    assert downloaded.returncode == 0, downloaded.stderr
    output, errors = f"{batch_id}_output.jsonl", f"{batch_id}_error.jsonl"
    images = ["shot_1.png", "shot_2.png", "pair-0.png", "pair-1.png"]
    assert downloaded.stdout.splitlines() == [str(out / name) for name in (output, *images, errors)]
    assert (out / output).read_bytes() == api(server, "GET", f"/files/{batch['output_file_id']}/content").content
    assert (out / errors).read_bytes() == api(server, "GET", f"/files/{batch['error_file_id']}/content").content
    for name in images:
        with Image.open(out / name) as image:
            assert (image.format, image.size) == ("PNG", (64, 64))
    assert sorted(path.name for path in out.iterdir()) == sorted([output, errors, *images])

    status = easel("batch", "status", batch_id, env=env)
    assert (status.returncode, status.stdout) == (0, f"{batch_id} completed: 4/4 answered (3 completed, 1 failed)\n")
    listed = easel("batch", "list", "--limit", "100", env=env).stdout.splitlines()
    assert any(line.startswith(f"{batch_id} completed: 4/4 answered") and GENERATIONS in line for line in listed)


def test_the_server_and_key_flags_replace_the_environment(server: LiveServer, tmp_path: Path):
    bare = clean_env(tmp_path / "home")
    refused = easel("batch", "list", "--server", server.url, "--api-key", "wrong", env=bare)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("easel batch list: error: 401: ")
    listed = easel("batch", "list", "--server", server.api_url, "--api-key", TEST_KEY, "--limit", "1", env=bare)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) <= 1
    assert all(line.startswith("batch_") for line in listed.stdout.splitlines())


def test_a_bad_file_is_one_line_and_leaves_no_upload_behind(server: LiveServer, env, tmp_path: Path):
    files_before = api(server, "GET", "/files?purpose=batch").json()["data"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    refused = easel("batch", "submit", str(bad), env=env)
    assert refused.returncode == 1 and refused.stdout == ""
    message = "Line 1 of the input file is not JSON: the file must be JSONL."
    assert refused.stderr == f"easel batch submit: error: 400: {message}\n"
    assert api(server, "GET", "/files?purpose=batch").json()["data"] == files_before
    missing = easel("batch", "submit", str(tmp_path / "nowhere.jsonl"), env=env)
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"easel batch submit: error: cannot read {tmp_path / 'nowhere.jsonl'}: No such file or directory\n"
    )
    mistaken = easel("batch", "submit", str(bad), "--endpoint", "/v1/chat/completions", env=env)
    assert mistaken.returncode == 2 and len(mistaken.stderr.splitlines()) == 1
    assert mistaken.stderr.startswith("easel: error: argument --endpoint: invalid choice")


@pytest.mark.parametrize("action", ["status", "download", "cancel"])
def test_an_unknown_batch_is_one_line(env, action: str):
    answered = easel("batch", action, "batch_nope", env=env)
    assert answered.returncode == 1 and answered.stdout == ""
    assert answered.stderr == f"easel batch {action}: error: 404: No such Batch object: batch_nope\n"


def test_ctrl_c_stops_the_wait_not_the_batch_and_cancel_stops_it(server: LiveServer, env, tmp_path: Path):
    jsonl = write_jsonl(
        tmp_path / "slow.jsonl", [request_line(f"slow-{i}", **generation(i, **SLOW)) for i in range(40)]
    )
    command = [sys.executable, "-m", "cli", "batch", "submit", str(jsonl), "--wait"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    waiting = subprocess.Popen(command, cwd=REPO, env=env, text=True, preexec_fn=ctrl_c_works, **pipes)
    try:
        batch_id = waiting.stdout.readline().strip()  # type: ignore[union-attr]
        first = waiting.stderr.readline()  # type: ignore[union-attr]  # the wait has begun: its first progress line
        assert first.startswith(f"{batch_id} "), first
        waiting.send_signal(signal.SIGINT)
        _, rest = waiting.communicate(timeout=300)  # only ends a hung test: a loaded machine may exit slowly
    finally:
        waiting.kill()
    assert waiting.returncode == 130
    assert rest.splitlines()[-1] == (
        f"easel batch: stopped waiting; {batch_id} keeps running "
        f"(easel batch status {batch_id} --wait, or easel batch cancel {batch_id})"
    )
    assert api(server, "GET", f"/batches/{batch_id}").json()["status"] in ("validating", "in_progress")

    cancelled = easel("batch", "cancel", batch_id, env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert re.fullmatch(
        rf"{batch_id} (cancelling|cancelled): \d+/40 answered \(\d+ completed, 0 failed\)\n", cancelled.stdout
    )
    ended = easel("batch", "status", batch_id, "--wait", env=env)
    assert ended.returncode == 1
    assert re.fullmatch(
        rf"easel batch: {batch_id} cancelled: \d+/40 answered \(\d+ completed, 0 failed\)",
        ended.stderr.splitlines()[-1],
    )
    again = easel("batch", "cancel", batch_id, env=env)
    assert again.returncode == 1 and again.stderr.startswith("easel batch cancel: error: 400: ")
    assert len(again.stderr.splitlines()) == 1


def test_download_of_an_unfinished_batch_says_so(server: LiveServer, env, tmp_path: Path):
    jsonl = write_jsonl(tmp_path / "slow.jsonl", [request_line(f"s-{i}", **generation(i, **SLOW)) for i in range(20)])
    batch_id = easel("batch", "submit", str(jsonl), env=env).stdout.strip()
    try:
        early = easel("batch", "download", batch_id, "-o", str(tmp_path / "out"), env=env)
        assert early.returncode == 1
        assert re.fullmatch(
            rf"easel batch download: error: batch {batch_id} is (validating|in_progress): it has no output or error "
            r"file yet\n",
            early.stderr,
        )
        assert not (tmp_path / "out").exists()
    finally:
        api(server, "POST", f"/batches/{batch_id}/cancel")


def test_an_images_extension_is_what_its_bytes_are():
    from cli.batch_download import image_extension

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "WEBP")
    assert image_extension(buffer.getvalue(), "png") == "webp"
    assert image_extension(b"\x89PNG....", None) == "png"
    assert image_extension(b"????", "gif") == "gif"
