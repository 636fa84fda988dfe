"""Run one image request in this process, exactly as the server would, with a progress bar per stage.

The model comes from the same settings as ``easel serve`` (registry, pulled
models, easel.toml, ``--model``). The request goes through the server's own
protocol code (field checks, presets, sizes) and file finishing, so a
picture made here has the bytes the API would answer for the same request.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from server.app.preflight import check_before_listening
from server.engine.base import cpu_cores
from server.http.errors import APIError
from server.protocol.edits import EditRequest, UploadedBody, VariationRequest
from server.protocol.images import GenerationRequest
from server.serving.decoding import UploadLimits
from server.serving.images import ImageRequest, prepare_job
from server.settings.config import Settings
from server.settings.loading import read_settings
from server.settings.model_specs import ModelSpec, parse_model_spec
from server.settings.options import ConfigError
from weights.registry import KNOWN_PULLS

from .image_request import CommandError, Request


class StageBars:
    """``JobControl.on_progress``: one bar per stage (prior, decoder, super_res), on stderr."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"{stage:<9}", unit="step", file=sys.stderr, leave=True)
        assert self.bar is not None
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None


def run_local(request: Request, args: argparse.Namespace) -> list[bytes]:
    settings, spec = _settings_and_model(args)
    from pipelines.base import JobControl, use_cpu_threads
    from pipelines.loader import load_backend  # torch and diffusers: seconds to import
    from pipelines.speed import SpeedOptions

    _quiet_loading()
    print(f"loading {spec.name} ({spec.family}) from {spec.path}", file=sys.stderr)
    try:
        # The server's speed settings, without the warm-up: this process runs one job, which compiles as it goes.
        quantize, step_cache, _, _ = settings.savings_for(spec)
        speed = SpeedOptions(settings.optimize, settings.compile_cache_dir, (), quantize, step_cache)
        dtype = settings.dtype_for(spec.family)
        backend = load_backend(
            spec.name, spec.family, spec.path, presets=spec.presets, device=settings.device, dtype=dtype, optimize=speed
        )
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from None
    if backend.info.device.startswith("cpu"):
        # A lone request in the server gets every core; thread count changes float sums, so match it.
        use_cpu_threads(cpu_cores())
    bars = StageBars()
    try:
        prepared = prepare_job(_parse(request), backend.info, "easel", UploadLimits.from_settings(settings))
        return prepared.finish(backend.run(prepared.job, JobControl(on_progress=bars)))
    except APIError as error:
        raise CommandError(error.message, error.param) from None
    except ValueError as error:  # a job the model refuses
        raise CommandError(str(error)) from None
    finally:
        bars.close()


def _quiet_loading() -> None:
    """No loading bars from diffusers and transformers: the stage bars are the progress that matters."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _settings_and_model(args: argparse.Namespace) -> tuple[Settings, ModelSpec]:
    argv = [f"--{name}={value}" for name in ("config", "device", "dtype") if (value := getattr(args, name))]
    named = args.model
    if named and "=" in named:  # NAME=FAMILY:PATH: this model only
        argv += ["--model", named]
        named = parse_model_spec(named).name
    try:
        settings = read_settings(argv)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    name = named or settings.default_model_name
    name = settings.aliases.get(name, name)
    chosen = [spec for spec in settings.models if spec.name == name]
    if not chosen and named:  # a bare name the settings do not list: a registered model, as `easel serve --model`
        try:
            settings = read_settings([*argv, "--model", named, "--default-model", named])
            chosen = list(settings.models)
        except ConfigError as error:
            if named in KNOWN_PULLS:  # "run `easel pull NAME` first"
                raise CommandError(str(error), "model") from None
    if not chosen:
        known = ", ".join([spec.name for spec in settings.models] + list(settings.aliases))
        raise CommandError(f"no model or alias {named!r} (have: {known})", "model")
    try:
        check_before_listening(settings, chosen)  # only the model this command runs
    except ConfigError as error:
        raise CommandError(str(error)) from None
    return settings, chosen[0]


def _parse(request: Request) -> ImageRequest:
    """The typed request, parsed as the endpoint parses its body (the model is already chosen)."""
    fields = {key: value for key, value in request.fields.items() if key != "model"}
    if request.task == "generate":
        return GenerationRequest.parse(fields)
    assert request.image is not None
    if request.task == "edit":
        return EditRequest.parse(UploadedBody(fields, False, "image", [request.image], request.mask))
    # Variations are multipart-only in the API: every value is text, as the form reader expects.
    form = {key: str(value) for key, value in fields.items()}
    return VariationRequest.parse(UploadedBody(form, True, "image", [request.image]))
