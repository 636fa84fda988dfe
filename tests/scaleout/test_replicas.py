"""Two replicas of the tiny model behind two ingress replicas, on a local Ray instance, driven by the openai SDK."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import ray
from openai import AsyncOpenAI, OpenAI

from server.scaleout.deployments import INGRESS_NAME, model_deployment_name
from server.scaleout.launch import APP_NAME
from server.settings.ray_serve import RayServeSettings
from tests.api.test_edits import MASK_PNG, PICTURE_PNG
from tests.conftest import FAST, SLOW, TEST_KEY, TINY, LiveServer, assert_envelope

from .conftest import ENGINE_CORES, RayApp, deployed, wait_until

STEPS = {"prior_steps": 2, "decoder_steps": 6}  # enough decoder steps for previews


@pytest.fixture(scope="module")
def two_replicas(serve_port: int, tiny_model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[RayApp]:
    # As many cores per replica as the plain test server's engine has, so both give the same bytes
    # (matrix products split over a different number of threads round differently).
    scaling = RayServeSettings(replicas=2, ingress_replicas=2, replica_cpus=ENGINE_CORES)
    image_dir = tmp_path_factory.mktemp("ray-images")
    with deployed(serve_port, tiny_model_dirs["kandinsky"], image_dir, scaling, api_keys=(TEST_KEY,)) as app:
        yield app


def sdk(app: RayApp | LiveServer, max_retries: int = 0) -> OpenAI:
    return OpenAI(base_url=app.api_url, api_key=TEST_KEY, max_retries=max_retries)


def test_the_sdk_gets_the_bytes_plain_serving_gives(two_replicas: RayApp, api_server: LiveServer) -> None:
    ray_client, plain_client = sdk(two_replicas), sdk(api_server)
    generation = dict(prompt="a red circle", size="128x128", n=2, response_format="b64_json")
    edit = dict(image=("p.png", PICTURE_PNG, "image/png"), mask=("m.png", MASK_PNG, "image/png"), prompt="a boat")
    variation = dict(image=("p.png", PICTURE_PNG, "image/png"), size="256x256", response_format="b64_json")
    for call, fields, extra in [
        (lambda c, **kw: c.images.generate(**kw), generation, FAST),
        (lambda c, **kw: c.images.edit(**kw), {**edit, "response_format": "b64_json"}, FAST),
        (lambda c, **kw: c.images.create_variation(**kw), variation, {"decoder_steps": 2}),  # no prior
    ]:
        answers = [call(client, **fields, extra_body={"seed": 11, **extra}) for client in (ray_client, plain_client)]
        images = [[item.b64_json for item in answer.data] for answer in answers]
        assert images[0] == images[1] and all(images[0])
        assert [item.seed for item in answers[0].data] == [item.seed for item in answers[1].data]


def test_streams_carry_the_same_events(two_replicas: RayApp, api_server: LiveServer) -> None:
    def events(client: OpenAI) -> list[tuple[str, int | None, str]]:
        stream = client.images.generate(
            prompt="a red circle", size="64x64", stream=True, partial_images=2, extra_body={"seed": 4, **STEPS}
        )
        return [(event.type, getattr(event, "partial_image_index", None), event.b64_json) for event in stream]

    through_ray = events(sdk(two_replicas))
    assert [kind for kind, _, _ in through_ray] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"
    ]
    assert through_ray == events(sdk(api_server))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/images/generations", {"prompt": "x", "n": 99}),
        ("POST", "/v1/images/generations", {"prompt": "x", "model": "no-such-model"}),
        ("POST", "/v1/images/generations", {"prompt": "x", "quality": "ultra"}),
        ("GET", "/v1/images/generations", None),
        ("GET", "/v1/nothing-here", None),
        ("GET", "/v1/models/dall-e-3", None),
    ],
)
def test_answers_and_headers_are_those_of_plain_serving(
    two_replicas: RayApp, api_server: LiveServer, method: str, path: str, body: dict | None
) -> None:
    def ask(url: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {TEST_KEY}"}
        return httpx.request(method, url + path, json=body, headers=headers, timeout=30)

    through_ray, plain = ask(two_replicas.url), ask(api_server.url)
    if path.startswith("/v1/models/"):  # a model object on Ray adds its replicas, from Serve's state; else the same
        model = through_ray.json()
        assert model.pop("replicas") == {"running": 2, "starting": 0, "stopping": 0, "min": 2, "max": 2}
        assert (through_ray.status_code, model) == (plain.status_code, plain.json())
    else:
        assert (through_ray.status_code, through_ray.content) == (plain.status_code, plain.content)
    assert [name for name, _ in through_ray.headers.raw] == [name for name, _ in plain.headers.raw]
    assert re.fullmatch(r"req_[0-9a-f]{32}", through_ray.headers["x-request-id"])  # one header, Easel's format


def test_the_api_key_is_required_through_ray(two_replicas: RayApp) -> None:
    response = httpx.post(two_replicas.api_url + "/images/generations", json={"prompt": "x"}, timeout=30)
    assert_envelope(response, 401, code="invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=two_replicas.api_url, api_key="wrong", max_retries=0).images.generate(prompt="x")


def completed_per_replica(app: RayApp) -> dict[str, int]:
    return {replica: stats["completed"] for replica, stats in app.replica_stats().items()}


def test_requests_spread_over_both_replicas(two_replicas: RayApp) -> None:
    """Each replica counts the jobs it ran (its own LocalEngine's figures, asked of each replica)."""
    before = completed_per_replica(two_replicas)
    assert len(before) == 2

    async def burst() -> None:
        client = AsyncOpenAI(base_url=two_replicas.api_url, api_key=TEST_KEY, max_retries=0)
        await asyncio.gather(
            *(
                client.images.generate(prompt="a blue star", size="64x64", extra_body={"seed": seed, **STEPS})
                for seed in range(8)
            )
        )

    asyncio.run(burst())
    after = completed_per_replica(two_replicas)
    ran = {replica: after[replica] - before[replica] for replica in before}
    assert sum(ran.values()) == 8
    assert min(ran.values()) >= 1, ran


def serving_replica(ray_dir: Path, deployment: str, request_id: str) -> str:
    """The replica of ``deployment`` whose access log holds ``request_id`` (Serve logs one line per request)."""
    pattern = f"replica_{APP_NAME}_{deployment}_*.log"

    def find() -> str | None:
        for log in (ray_dir / "session_latest" / "logs" / "serve").glob(pattern):
            if f" {request_id} -- " in log.read_text():
                return log.stem.rsplit("_", 1)[1]
        return None

    return wait_until(find, 120, f"a log line for {request_id}")


def test_url_images_made_by_either_replica_are_fetched_through_either_ingress(
    two_replicas: RayApp, ray_dir: Path
) -> None:
    """Serve's access logs name the ingress replica that answered each request id: some files are fetched
    through the ingress replica that did not write them."""
    client = sdk(two_replicas)
    crossings = 0
    for number in range(6):
        fields = dict(prompt="a green square", size="64x64", extra_body={"seed": number, **FAST})
        expected = base64.b64decode(client.images.generate(**fields, response_format="b64_json").data[0].b64_json)
        made_by = f"req_post{number:028d}"
        answer = client.images.generate(**fields, response_format="url", extra_headers={"x-request-id": made_by})
        writer = serving_replica(ray_dir, INGRESS_NAME, made_by)
        for attempt in range(4):
            fetched_by = f"req_get{number:02d}{attempt:026d}"
            response = httpx.get(answer.data[0].url, headers={"x-request-id": fetched_by}, timeout=30)
            assert (response.status_code, response.headers["content-type"]) == (200, "image/png")
            assert response.content == expected
            crossings += serving_replica(ray_dir, INGRESS_NAME, fetched_by) != writer
    assert crossings > 0


def test_a_client_that_leaves_cancels_the_job_on_its_replica(two_replicas: RayApp) -> None:
    before = two_replicas.replica_stats()
    body = {"prompt": "a red circle", "size": "64x64", "stream": True, "partial_images": 3, **SLOW}
    headers = {"authorization": f"Bearer {TEST_KEY}"}
    # The first partial image comes at decoder step 50: seconds apart on a busy machine, so no 5 s read timeout.
    patient = httpx.Timeout(30.0, read=600.0)
    url = two_replicas.api_url + "/images/generations"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=patient) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line == "event: image_generation.partial_image":
                break  # leave after the first partial image (decoder step 50 of 200)

    def settled() -> dict[str, dict] | None:
        now = two_replicas.replica_stats()
        cancelled = sum(now[r]["cancelled"] - before[r]["cancelled"] for r in now)
        return now if cancelled == 1 and all(stats["running"] == 0 for stats in now.values()) else None

    after = wait_until(settled, 300, "the replica to cancel the job")
    assert sum(after[r]["completed"] for r in after) == sum(before[r]["completed"] for r in before)


def test_a_full_queue_is_a_429_and_leaving_clients_free_every_replica(two_replicas: RayApp) -> None:
    """Replicas hold 2 x 4 jobs; each of the 2 ingress replicas queues 16 more: of 50 requests, 10 or more are 429s."""
    headers = {"authorization": f"Bearer {TEST_KEY}"}
    body = {"prompt": "a red circle", "size": "64x64", "response_format": "b64_json", **SLOW}

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=60)) as client:
            asks = [
                asyncio.ensure_future(
                    client.post(two_replicas.api_url + "/images/generations", json=body, headers=headers)
                )
                for _ in range(50)
            ]
            refused: list[httpx.Response] = []
            while len(refused) < 10:
                done, _ = await asyncio.wait([a for a in asks if not a.done()], return_when=asyncio.FIRST_COMPLETED)
                refused += [a.result() for a in done]
            for ask in asks:
                ask.cancel()  # the clients leave: every job waiting or running must go
            await asyncio.gather(*asks, return_exceptions=True)
            return refused

    for response in asyncio.run(flood()):
        assert_envelope(response, 429, code="queue_full")
        assert int(response.headers["retry-after"]) >= 1

    def idle() -> bool:
        replicas_idle = all(stats["running"] == 0 for stats in two_replicas.replica_stats().values())
        return replicas_idle and two_replicas.readiness()["models"][TINY]["queued"] == 0

    wait_until(idle, 180, "every job of the clients that left to be dropped")


def replica_actor_names() -> list[str]:
    prefix = f"SERVE_REPLICA::{APP_NAME}#{model_deployment_name(TINY)}#"
    return sorted(
        actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True) if actor["name"].startswith(prefix)
    )


CLIENTS = 6


def test_killing_a_replica_under_load_loses_no_request(two_replicas: RayApp) -> None:
    def busy_replicas() -> dict[str, dict]:
        return {replica: stats for replica, stats in two_replicas.replica_stats().items() if stats["running"]}

    before = replica_actor_names()
    assert len(before) == 2
    failures: list[BaseException] = []
    finished = []
    started = threading.Event()

    def client_loop(number: int) -> None:
        client = sdk(two_replicas, max_retries=5)
        try:
            for round_ in range(4):
                seed = 100 * number + round_
                extra = {"seed": seed, "prior_steps": 2, "decoder_steps": 12}
                if number % 4 == 0:  # some clients stream: their previews must not repeat when a job is sent again
                    stream = client.images.generate(
                        prompt="a red heart", size="64x64", stream=True, partial_images=2, extra_body=extra
                    )
                    kinds = [(event.type, getattr(event, "partial_image_index", None)) for event in stream]
                    assert kinds == [
                        ("image_generation.partial_image", 0),
                        ("image_generation.partial_image", 1),
                        ("image_generation.completed", None),
                    ]
                else:
                    answer = client.images.generate(
                        prompt="a red heart", size="64x64", response_format="b64_json", extra_body=extra
                    )
                    assert answer.data[0].seed == seed
                finished.append(seed)
                started.set()
        except BaseException as error:  # reported below
            failures.append(error)

    # Six clients on 2 x 4 slots (max_ongoing_requests) leave a slot free for the stats calls below: a
    # stats call is a request like any other and would otherwise queue behind the load.
    threads = [threading.Thread(target=client_loop, args=(number,)) for number in range(CLIENTS)]
    for thread in threads:
        thread.start()
    assert started.wait(300)
    busy = next(replica for replica, stats in wait_until(busy_replicas, 120, "a busy replica").items())
    victim = next(name for name in before if name.endswith(f"#{busy}"))
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    for thread in threads:
        thread.join(600)  # only ends a hung test: 24 generations on a loaded machine take minutes
    assert failures == []
    assert len(finished) == CLIENTS * 4
    # The jobs the dead replica held were sent again by an ingress (each counts its own; Serve picks one).
    wait_until(lambda: two_replicas.readiness()["models"][TINY]["resent"] > 0, 120, "an ingress that resent a job")

    # Serve replaces the dead replica. Its status can still count the dead one as RUNNING until a health
    # check notices, so wait for a new actor by name as well as for the count.
    def replaced() -> bool:
        after = replica_actor_names()
        return len(after) == 2 and victim not in after and two_replicas.replica_states().get("RUNNING") == 2

    wait_until(replaced, 120, "a replacement replica")
