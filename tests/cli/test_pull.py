"""``easel pull`` against a fake hub on a loopback port: progress, resume, checksums, layout, registry, serving.

The hub repositories are the tiny random-weight pipelines of
:mod:`pipelines.tiny`, split and laid out as the real ones are on the hub
(Kandinsky 2.2's decoder and prior repositories; Karlo and its
image-variations repository), each with a model card that names its licence,
and with files the pull must leave alone (fp16 variants whole and sharded,
the variations repository's own decoder).
"""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ..conftest import FAST
from .conftest import REPO, clean_env, ctrl_c_works, easel, free_port, serving
from .fakehub import FakeHub
from .hubrepos import DECODER, KARLO, KARLO_VARIATIONS, PRIOR, UNET, build_hub_repos


@pytest.fixture(scope="module")
def hub_repos(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_hub_repos(tiny_model_dirs, tmp_path_factory.mktemp("hub"))


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``condition()`` holds; fails at once if ``process`` exits first. The timeout only ends a hung test."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited {process.returncode} first"
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


@pytest.fixture
def hub(hub_repos: dict[str, Path]):
    fake = FakeHub(hub_repos)
    fake.url = fake.start()
    yield fake
    fake.stop()


def test_an_interrupted_pull_resumes_then_checks_registers_and_serves(hub: FakeHub, tmp_path: Path):
    size = (hub.repos[DECODER] / UNET).stat().st_size
    hub.stall_after[f"{DECODER}/{UNET}"] = size // 2
    env = clean_env(tmp_path / "home", HF_ENDPOINT=hub.url)
    command = [sys.executable, "-m", "cli", "pull", "kandinsky-2-2"]
    first = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works)
    wait_for(hub.stalled.is_set, first)  # the pull reached the UNet; a busy machine may take minutes to get there
    # The hub holds the connection open until it is stopped; Ctrl-C once the client has written what it got.
    part = tmp_path / "home/downloads" / DECODER.replace("/", "--") / "unet"
    wait_for(lambda: sum(p.stat().st_size for p in part.glob("*.part")) == size // 2, first)
    first.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = first.communicate(timeout=300)  # only ends a hung test
    assert first.returncode == 130, stderr
    assert "interrupted; run the same command again" in stderr
    parts = list((tmp_path / "home/downloads").rglob("*.part"))
    assert len(parts) == 1 and parts[0].name.startswith("diffusion_pytorch_model.safetensors.")
    kept = parts[0].stat().st_size
    assert 0 < kept <= size // 2
    # The whole file was asked for first; a loaded machine may also have seen the read time out and the pull
    # ask for the rest (stalled again) before the Ctrl-C came.
    first_ranges = [r.range for r in hub.gets(DECODER, UNET)]
    assert first_ranges[0] is None and set(first_ranges[1:]) <= {f"bytes={size // 2}-"}, first_ranges

    hub.release.set()  # the hub answers whole again
    second = easel("pull", "kandinsky-2-2", env=env)
    assert second.returncode == 0, second.stderr
    # Resumed where it stopped: the UNet's request of the second run asks for the rest only.
    assert [r.range for r in hub.gets(DECODER, UNET)][len(first_ranges) :] == [f"bytes={kept}-"]
    # Progress: the licence and the plan with its size before any weights, a line per file, the byte bars, the checks.
    lines = second.stderr.splitlines()
    licence = lines.index(f"kandinsky-2-2: licence Apache License 2.0 (apache-2.0) (model card of {DECODER})")
    plan = re.compile(
        rf"kandinsky-2-2: (\d+) files, \d+\.\d\d GB to download from {DECODER}@{hub.commit(DECODER)[:7]}, "
        rf"{PRIOR}@{hub.commit(PRIOR)[:7]} \({re.escape(hub.url)}\)"
    )
    planned = next(i for i, line in enumerate(lines) if plan.fullmatch(line))
    count = int(plan.fullmatch(lines[planned]).group(1))  # type: ignore[union-attr]
    per_file = [i for i, line in enumerate(lines) if re.match(rf"\[\d+/{count}\] ", line)]
    assert licence < planned < per_file[0] and len(per_file) == count
    assert f"{DECODER}: {UNET}" in second.stderr and "100%" in second.stderr
    assert "match the hub's checksums" in second.stderr and "loads: kandinsky22" in second.stderr
    # Only what the backends load was downloaded: the model card is read, no fp16 variant whole or sharded.
    fetched = [r.path.rsplit("/", 1)[-1] for r in hub.requests]
    assert not [name for name in fetched if ".fp16" in name]
    assert not (tmp_path / "home/models/kandinsky-2-2/README.md").exists()

    model = tmp_path / "home/models/kandinsky-2-2"
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == "KandinskyV22CombinedPipeline"
    assert {p.name for p in model.iterdir() if p.is_dir()} == {
        "unet", "scheduler", "movq", "prior_prior", "prior_image_encoder", "prior_text_encoder",
        "prior_tokenizer", "prior_scheduler", "prior_image_processor",
    }  # fmt: skip
    entry = json.loads((tmp_path / "home/registry.json").read_text())["models"]["kandinsky-2-2"]
    assert entry["family"] == "kandinsky22" and entry["path"] == "models/kandinsky-2-2"
    assert entry["license"] == "apache-2.0"
    assert json.loads((model / "easel.json").read_text())["license"] == "apache-2.0"
    assert entry["source"] == f"pulled from {DECODER}@{hub.commit(DECODER)[:7]}, {PRIOR}@{hub.commit(PRIOR)[:7]}"
    assert not (tmp_path / "home/downloads" / DECODER.replace("/", "--")).exists()

    listed = easel("models", env=env)
    assert listed.returncode == 0 and "kandinsky-2-2" in listed.stdout and "pulled from" in listed.stdout

    with serving(env=env) as url:  # no flags: the pulled model is served next to the shipped one
        body = {
            "model": "kandinsky-2-2",
            "prompt": "a red circle",
            "size": "256x256",
            "response_format": "b64_json",
            **FAST,
        }
        response = httpx.post(url + "/v1/images/generations", json=body, timeout=120)
        assert response.status_code == 200, response.text
        image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
        assert image.size == (256, 256)
        models = httpx.get(url + "/v1/models", timeout=10).json()["data"]
        assert {"easel-mini", "kandinsky-2-2"} <= {model["id"] for model in models}


def test_karlo_takes_only_the_image_encoder_from_the_variations_repository(hub: FakeHub, tmp_path: Path):
    env = clean_env(tmp_path / "home", HF_ENDPOINT=hub.url)
    done = easel("pull", "karlo", "--no-check", "--accept-license", env=env)  # loaded below, in this process
    assert done.returncode == 0, done.stderr
    model = tmp_path / "home/models/karlo"
    from pipelines.loader import load_backend

    backend = load_backend("karlo", "karlo", model)
    assert backend.info.tasks == {"generate", "variation", "edit"} and backend.variation_pipe is not None
    assert (model / "image_encoder").is_dir() and (model / "feature_extractor").is_dir()
    assert json.loads((model / "model_index.json").read_text())["_class_name"] == "UnCLIPPipeline"
    from_variations = {
        r.path.split("/resolve/")[1].split("/", 1)[1] for r in hub.requests if KARLO_VARIATIONS + "/resolve" in r.path
    }
    assert {name.split("/")[0] for name in from_variations} == {
        "model_index.json",
        "README.md",  # its model card: the licence
        "image_encoder",
        "feature_extractor",
    }


def test_a_file_that_fails_its_checksum_is_deleted_and_nothing_is_registered(hub: FakeHub, tmp_path: Path):
    hub.corrupt.add(f"{PRIOR}/prior/config.json")
    env = clean_env(tmp_path / "home", HF_ENDPOINT=hub.url)
    done = easel("pull", "kandinsky-2-2", "--no-check", env=env)
    assert done.returncode == 1
    assert f"{PRIOR}: prior/config.json does not match the hub's checksum" in done.stderr
    assert not list((tmp_path / "home/downloads").rglob("prior/config.json*"))
    assert not (tmp_path / "home/registry.json").exists()


def test_offline_it_fails_at_once_with_a_clear_message(tmp_path: Path):
    env = clean_env(tmp_path / "home", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    started = time.monotonic()
    done = easel("pull", "karlo", env=env)
    assert done.returncode == 1
    assert time.monotonic() - started < 30  # the interpreter's start-up included, on a loaded machine
    assert "cannot reach the Hugging Face hub at http://127.0.0.1:" in done.stderr
    assert "the one command that needs the internet" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_hub_offline_in_the_environment_is_refused_by_name(tmp_path: Path):
    done = easel("pull", "karlo", env=clean_env(tmp_path / "home", HF_HUB_OFFLINE="1"))
    assert done.returncode == 1 and "HF_HUB_OFFLINE is set" in done.stderr


def test_a_dropped_connection_is_resumed_from_where_it_stopped(hub: FakeHub, tmp_path: Path):
    size = (hub.repos[DECODER] / UNET).stat().st_size
    hub.drops[f"{DECODER}/{UNET}"] = [size // 4, size // 4]  # two drops, each after a quarter of the file
    env = clean_env(tmp_path / "home", HF_ENDPOINT=hub.url)
    done = easel("pull", "kandinsky-2-2", "--no-check", env=env)
    assert done.returncode == 0, done.stderr
    ranges = [r.range for r in hub.gets(DECODER, UNET)]
    first, second = size // 4, 2 * (size // 4)
    assert ranges == [None, f"bytes={first}-", f"bytes={second}-"]
    assert f"connection lost at {first} of {size} bytes" in done.stderr and "resuming in 0.5 s" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "home/models/kandinsky-2-2" / UNET).read_bytes() == (hub.repos[DECODER] / UNET).read_bytes()


def test_when_retries_run_out_one_line_says_to_run_it_again_which_continues(hub: FakeHub, tmp_path: Path):
    from cli.hub import TRANSFER_ATTEMPTS

    size = (hub.repos[DECODER] / UNET).stat().st_size
    hub.drops[f"{DECODER}/{UNET}"] = [1000] * TRANSFER_ATTEMPTS
    env = clean_env(tmp_path / "home", HF_ENDPOINT=hub.url)
    done = easel("pull", "kandinsky-2-2", "--no-check", env=env)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("easel pull: error:")]
    assert errors == [
        f"easel pull: error: {DECODER}: {UNET}: the connection failed {TRANSFER_ATTEMPTS} times "
        "(RemoteProtocolError: peer closed connection without sending complete message body "
        f"(received 1000 bytes, expected {size - 1000 * (TRANSFER_ATTEMPTS - 1)})); what arrived is kept: "
        "run the same command again to continue where it stopped"
    ]
    assert "Traceback" not in done.stderr and not (tmp_path / "home/registry.json").exists()
    again = easel("pull", "kandinsky-2-2", "--no-check", env=env)
    assert again.returncode == 0, again.stderr
    assert hub.gets(DECODER, UNET)[-1].range == f"bytes={1000 * TRANSFER_ATTEMPTS}-"
    assert (tmp_path / "home/models/kandinsky-2-2" / UNET).read_bytes() == (hub.repos[DECODER] / UNET).read_bytes()


def test_a_gated_repository_names_hf_token_and_a_token_opens_it(hub: FakeHub, tmp_path: Path):
    hub.gated[PRIOR] = "hf_secret"
    refused = easel("pull", "kandinsky-2-2", "--no-check", env=clean_env(tmp_path / "home", HF_ENDPOINT=hub.url))
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        f"easel pull: error: the hub answered 401 for {PRIOR}: it is gated or private; accept its terms at "
        f"{hub.url}/{PRIOR} and set HF_TOKEN to a token that may read it (https://huggingface.co/settings/tokens)"
    )
    assert "Traceback" not in refused.stderr
    env = clean_env(tmp_path / "home", HF_ENDPOINT=hub.url, HF_TOKEN="hf_secret")
    assert easel("pull", "kandinsky-2-2", "--no-check", env=env).returncode == 0


def test_a_file_without_an_lfs_hash_is_checked_by_size_and_the_pull_says_so(hub: FakeHub, tmp_path: Path):
    hub.xet.add(f"{DECODER}/{UNET}")
    env = clean_env(tmp_path / "home", HF_ENDPOINT=hub.url)
    done = easel("pull", "kandinsky-2-2", "--no-check", env=env)
    assert done.returncode == 0, done.stderr
    assert (
        f"{DECODER}: the hub gives no SHA-256 for 1 file(s) (stored with Xet): checked by size only: {UNET}"
    ) in done.stderr.splitlines()
    assert "match the hub's checksums or sizes" in done.stderr


def test_an_open_rail_licence_is_accepted_once_and_remembered(hub: FakeHub, tmp_path: Path):
    env = clean_env(tmp_path / "home", HF_ENDPOINT=hub.url)
    refused = easel("pull", "karlo", "--no-check", env=env)
    assert refused.returncode == 1
    link = f"{hub.url}/{KARLO}/blob/{hub.commit(KARLO)}/LICENSE"
    assert refused.stderr.splitlines()[-3:] == [
        f"easel pull: karlo is licensed under CreativeML Open RAIL-M (creativeml-openrail-m): {link}",
        "Its use restrictions bind you, and you must pass them on to everyone your API server serves "
        "(for instance in your terms of service).",
        "To accept the licence, run `easel pull karlo --accept-license` (recorded in $EASEL_HOME/licenses.json, "
        "so later pulls do not ask again).",
    ]
    # Nothing but the indexes and model cards was downloaded before the refusal.
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.requests if "/resolve/" in r.path}
    assert fetched == {"model_index.json", "README.md"}
    accepted = easel("pull", "karlo", "--no-check", "--accept-license", env=env)
    assert accepted.returncode == 0, accepted.stderr
    record = json.loads((tmp_path / "home/licenses.json").read_text())["karlo"]
    assert record["license"] == "creativeml-openrail-m" and record["text"] == link
    again = easel("pull", "karlo", "--no-check", env=env)  # not asked again
    assert again.returncode == 0, again.stderr
    assert "karlo: licence CreativeML Open RAIL-M (creativeml-openrail-m)" in again.stderr
    entry = json.loads((tmp_path / "home/registry.json").read_text())["models"]["karlo"]
    assert entry["license"] == "creativeml-openrail-m"
