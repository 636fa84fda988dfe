"""What crosses Ray (plain data, errors rebuilt as their own types) and the ``--ray`` flags; no Ray instance."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest
import yaml
from PIL import Image
from ray.serve.schema import ServeDeploySchema

from pipelines.base import ImageJob, StagePreset
from pipelines.errors import Cancelled, MissingComponent, NonFiniteOutput
from pipelines.speed import SpeedOptions
from server.engine.base import EngineStopped, JobResult, Preview, QueueFull
from server.observe.metrics import Metrics
from server.scaleout.deployments import INGRESS_NAME, build, build_app, model_deployment_name, model_options
from server.scaleout.engine import RayEngine
from server.scaleout.figures import MAX_WAITING_FIGURES, FigureLog, replay
from server.scaleout.wire import (
    RemoteError,
    error_from_wire,
    error_message,
    is_background,
    job_from_wire,
    job_to_wire,
    preview_from_wire,
    preview_message,
    result_from_wire,
    result_message,
)
from server.serving.job_errors import job_error
from server.serving.models import model_to_load
from server.settings.loading import load_settings
from server.settings.ray_serve import RayServeSettings

REPO = Path(__file__).resolve().parents[2]
PRESET = StagePreset(prior_steps=2, prior_guidance=2.0, decoder_steps=3, decoder_guidance=3.0)


def edit_job() -> ImageJob:
    image = Image.new("RGB", (40, 24), (10, 200, 30))
    mask = Image.new("L", (40, 24), 0)
    mask.paste(255, (5, 5, 20, 20))
    return ImageJob(
        task="edit",
        n=2,
        width=64,
        height=48,
        seeds=[7, 8],
        preset=PRESET,
        prompt="a boat",
        negative_prompt="blur",
        image=image,
        mask=mask,
        preview_count=2,
        input_image_weight=0.25,
        frames=3,
    )


def builtins_only(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and builtins_only(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return all(builtins_only(item) for item in value)
    return value is None or isinstance(value, (str, int, float, bytes, bool))


def test_a_job_crosses_as_plain_data_and_comes_back_whole() -> None:
    job = edit_job()
    wire = job_to_wire(job)
    assert builtins_only(wire)  # no PIL image, no class of ours
    back = job_from_wire(pickle.loads(pickle.dumps(wire)))
    data = ("task", "n", "width", "height", "seeds", "preset", "prompt", "negative_prompt", "preview_count")
    for name in (*data, "input_image_weight", "frames"):
        assert getattr(back, name) == getattr(job, name), name
    for name in ("image", "mask"):
        original, rebuilt = getattr(job, name), getattr(back, name)
        assert (rebuilt.mode, rebuilt.size, rebuilt.tobytes()) == (original.mode, original.size, original.tobytes())


def test_previews_and_results_cross_as_pixels() -> None:
    images = [Image.new("RGB", (8, 6), (i, 2 * i, 3 * i)) for i in range(3)]
    preview = preview_from_wire(preview_message(Preview(1, images)))
    result = result_from_wire(result_message(JobResult(images, 5, 0.25)))
    assert preview.index == 1 and (result.prompt_tokens, result.run_seconds) == (5, 0.25)
    for rebuilt in (preview.images, result.images):
        assert [image.tobytes() for image in rebuilt] == [image.tobytes() for image in images]


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (QueueFull("m", 3, 7), 429),
        (EngineStopped("stopping"), 503),
        (Cancelled(), 503),
        (MissingComponent("no image encoder"), 400),
        (ValueError("bad size"), 400),
        (UnicodeError("a ValueError subclass"), 400),
        (RuntimeError("device fault"), 500),
        (NonFiniteOutput("m", "decoder"), 500),
    ],
)
def test_errors_come_back_as_the_types_the_error_table_answers(raised: Exception, status: int) -> None:
    rebuilt = error_from_wire(pickle.loads(pickle.dumps(error_message(raised))))
    assert job_error(rebuilt, "req_test").status == status
    if isinstance(raised, QueueFull):
        assert isinstance(rebuilt, QueueFull)
        assert (rebuilt.model, rebuilt.waiting, rebuilt.retry_after) == ("m", 3, 7)
        assert job_error(rebuilt, "req_test").headers["retry-after"] == "7"
    elif isinstance(raised, NonFiniteOutput):
        assert (rebuilt.model, rebuilt.stage) == ("m", "decoder")  # type: ignore[attr-defined]
        assert job_error(rebuilt, "req_test").code == "model_error"
    elif isinstance(raised, RuntimeError):
        assert isinstance(rebuilt, RemoteError) and str(rebuilt) == "RuntimeError: device fault"
    else:
        assert str(rebuilt) == str(raised)


def test_ray_flags_and_their_environment_variables() -> None:
    plain = load_settings([], {})
    assert plain.ray is None
    flags = ["--ray", "--replicas", "3", "--replica-gpus", "0.5", "--replica-cpus", "2", "--ingress-replicas", "2"]
    assert load_settings(flags, {}).ray == RayServeSettings(
        replicas=3, replica_gpus=0.5, replica_cpus=2.0, ingress_replicas=2
    )
    env = {"EASEL_RAY": "1", "EASEL_MIN_REPLICAS": "1", "EASEL_MAX_REPLICAS": "4", "EASEL_TARGET_ONGOING_REQUESTS": "3"}
    scaling = load_settings([], env).ray
    assert scaling == RayServeSettings(min_replicas=1, max_replicas=4, target_ongoing_requests=3.0)
    assert scaling.autoscaling
    zero = ["--ray", "--min-replicas", "0", "--max-replicas", "2", "--downscale-delay-seconds", "30"]
    assert load_settings(zero, {}).ray == RayServeSettings(min_replicas=0, max_replicas=2, downscale_delay_seconds=30)


@pytest.mark.parametrize(
    "argv",
    [
        ["--replicas", "2"],  # a Ray flag without --ray would be silently ignored
        ["--ray", "--min-replicas", "1"],
        ["--ray", "--min-replicas", "3", "--max-replicas", "2"],
        ["--ray", "--replicas", "0"],
        ["--ray", "--replica-gpus", "-1"],
        ["--ray", "--downscale-delay-seconds", "5"],  # a fixed replica count is never scaled down
        ["--ray", "--min-replicas", "0", "--max-replicas", "1", "--downscale-delay-seconds", "-1"],
    ],
)
def test_ray_flags_that_cannot_work_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(argv, {})


def test_preload_is_refused_on_ray_where_the_deployments_say_what_loads_at_start(capsys) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--ray", "--preload", "easel-mini"], {})
    assert capsys.readouterr().err == (
        "easel: error: --preload: not with --ray, where the models loaded at start are those whose deployment "
        "keeps a replica (--min-replicas 1 or more, or --replicas)\n"
    )


def test_deployment_options_follow_the_flags() -> None:
    fixed = model_options(RayServeSettings(replicas=3, replica_cpus=2, replica_gpus=0.5, max_ongoing_requests=6), 12)
    assert fixed == {
        "max_ongoing_requests": 6,
        "graceful_shutdown_timeout_s": 12,  # --shutdown-timeout: Serve lets a stopping replica finish its jobs
        "ray_actor_options": {"num_cpus": 2, "num_gpus": 0.5},
        "num_replicas": 3,
    }
    scaled = model_options(RayServeSettings(min_replicas=0, max_replicas=4, target_ongoing_requests=1.5), 30)
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 1.5}
    quick = model_options(RayServeSettings(min_replicas=0, max_replicas=1, downscale_delay_seconds=20), 30)
    assert quick["autoscaling_config"]["downscale_delay_s"] == 20


def test_a_replica_loads_its_model_with_the_dtype_and_speed_settings_one_process_would(tmp_path: Path) -> None:
    argv = [
        "--ray",
        "--image-dir",
        str(tmp_path),
        "--model",
        f"k=kandinsky22:{tmp_path}",
        "--model",
        f"u=karlo:{tmp_path}",
    ]
    argv += ["--family-dtype", "kandinsky22=bfloat16", "--optimize", "channels_last", "--step-cache", "3"]
    argv += ["--compile-cache-dir", str(tmp_path / "compiled"), "--compile-warmup-batches", "1,3"]
    settings = load_settings(argv, {})
    models = build_app(settings)._bound_deployment.init_args[1]
    loads = {name: app._bound_deployment.init_args[0] for name, app in models.items()}
    assert loads == {spec.name: model_to_load(settings, spec) for spec in settings.models}
    kandinsky, karlo = loads["k"], loads["u"]
    assert (kandinsky.dtype, karlo.dtype) == ("bfloat16", None)
    assert kandinsky.optimize == SpeedOptions(
        frozenset({"channels_last"}), tmp_path / "compiled", (1, 3), quantize="none", step_cache=3
    )
    assert karlo.optimize.step_cache == 0  # Karlo's decoder has no step cache


def test_the_example_serve_config_is_valid_and_names_the_deployments_the_builder_makes() -> None:
    config = yaml.safe_load((REPO / "examples" / "ray-serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["import_path"] == "server.scaleout.deployments:build"
    build(application["args"])  # the builder accepts its args
    settings = load_settings(application["args"]["argv"], {})
    made = {INGRESS_NAME, *(model_deployment_name(spec.name) for spec in settings.models)}
    assert {deployment["name"] for deployment in application["deployments"]} == made


class UnansweredCalls:
    """Stands in for a model deployment's handle whose replicas are all busy: no call is ever taken."""

    def options(self, stream: bool) -> UnansweredCalls:
        return self

    @property
    def run(self) -> UnansweredCalls:
        return self

    def remote(self, wire: dict) -> UnansweredCall:
        return UnansweredCall()


class UnansweredCall:
    def cancel(self) -> None:
        pass

    def __aiter__(self) -> UnansweredCall:
        return self

    async def __anext__(self) -> dict:
        await asyncio.Event().wait()
        raise StopAsyncIteration


def test_the_ingress_queue_keeps_a_reserve_for_retried_requests_then_drains() -> None:
    def job() -> ImageJob:
        return ImageJob(task="generate", n=1, width=8, height=8, seeds=[1], preset=PRESET, prompt="a boat")

    async def scenario() -> None:
        engine = RayEngine({"m": UnansweredCalls()}, queue_size=2)
        handles = [engine.submit("m", job()) for _ in range(2)]
        with pytest.raises(QueueFull) as refused:
            engine.submit("m", job())
        assert refused.value.retry_after > 0
        handles += [engine.submit("m", job(), retried=True) for _ in range(2)]  # the reserve: as large again
        with pytest.raises(QueueFull):
            engine.submit("m", job(), retried=True)
        assert engine.stats("m")["queued"] == 4
        assert not await asyncio.to_thread(engine.drain, 0.2)  # nothing ran: not drained in time
        with pytest.raises(EngineStopped):
            engine.submit("m", job(), retried=True)  # draining takes no new job
        await asyncio.to_thread(engine.shutdown, 5.0)
        for handle in handles:
            with pytest.raises(EngineStopped):
                await handle.result()
        assert await asyncio.to_thread(engine.drain, 0.2)

    asyncio.run(scenario())


def test_a_replicas_figures_reach_the_ingress_once_and_only_those_it_does_not_count_itself() -> None:
    log = FigureLog()
    on_replica = log.metrics()
    on_replica.stage_seconds.labels("m", "decoder").observe(0.5)
    on_replica.busy_seconds.labels("cpu").inc(0.75)
    on_replica.images.labels("m").inc(2)  # the ingress counts images and cancellations itself
    on_replica.cancelled.labels("m").inc()
    figures = log.drain()
    assert pickle.loads(pickle.dumps(figures)) == figures  # plain data: it crosses Ray
    assert log.drain() == []
    ingress = Metrics()
    replay(figures, ingress.engine)
    read = ingress.registry.get_sample_value
    assert read("easel_stage_seconds_sum", {"model": "m", "stage": "decoder"}) == 0.5
    assert read("easel_worker_busy_seconds_total", {"device": "cpu"}) == 0.75
    assert read("easel_images_generated_total", {"model": "m"}) is None
    for number in range(MAX_WAITING_FIGURES + 5):  # nobody drains: the oldest go
        on_replica.queue_wait.labels("m").observe(number)
    kept = log.drain()
    assert len(kept) == MAX_WAITING_FIGURES and kept[0][3] == 5.0


def test_whether_a_job_is_a_batch_line_crosses_with_it() -> None:
    job = edit_job()
    for background in (True, False):
        wire = pickle.loads(pickle.dumps(job_to_wire(job, background=background)))
        assert is_background(wire) is background
        assert job_from_wire(wire).seeds == job.seeds  # the flag is not a field of the job
    assert is_background({"seeds": [1]}) is False  # a message from an ingress that sends no flag
