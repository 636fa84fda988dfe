"""The models this server offers: their load state, their aliases, and name resolution.

Models load one by one in a background thread after the server starts
listening, so each entry is ``loading``, ``ready`` or ``failed`` (with the
loader's message); the image endpoints answer 503 until theirs is ready.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.base import ModelInfo, Task
from pipelines.speed import SpeedOptions, warmup_batches_for

from ..engine.base import DEFAULT_MAX_BATCH_IMAGES, Engine, EngineStopped, ModelToLoad
from ..http.errors import SERVER_ERROR, APIError, shown
from ..protocol.images import ApiStyle, api_style_for, check_task, is_openai_image_name, max_n_for
from ..protocol.models import model_object
from ..protocol.tables import MAX_N
from ..settings.config import Settings
from ..settings.model_specs import ModelSpec
from .model_facts import ModelFacts, model_facts

log = logging.getLogger("easel.models")

LOADING_RETRY_AFTER_SECONDS = 5


class ModelEntry:
    """One configured model and where its loading stands."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.status: Literal["loading", "ready", "failed"] = "loading"
        self.info: ModelInfo | None = None
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.facts: ModelFacts | None = None  # read from the directory before loading (load_all)

    @property
    def name(self) -> str:
        return self.spec.name

    def created(self) -> int:
        if self.info is not None:
            return self.info.created
        try:
            return int(self.spec.path.stat().st_mtime)
        except OSError:
            return 0


@dataclass(frozen=True)
class ReadyModel:
    """A loaded model, as a request named it."""

    requested: str  # the name the client used (alias or model)
    name: str  # the model it resolves to
    api_style: ApiStyle
    info: ModelInfo


def model_not_found(name: str) -> APIError:
    return APIError(
        404,
        f"The model `{shown(name)}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


class Catalog:
    def __init__(self, settings: Settings) -> None:
        self.entries = {spec.name: ModelEntry(spec) for spec in settings.models}
        self.aliases = dict(settings.aliases)
        self.default_name = settings.default_model_name

    def names(self) -> list[str]:
        """Every name a client may use: models first, then aliases."""
        return [*self.entries, *self.aliases]

    def entry(self, requested: str | None) -> ModelEntry:
        """The entry for a requested name (``None``: the default model); 404 if unknown.

        An OpenAI image model name that is neither a model nor an alias here (a
        snapshot or model released after this server) resolves to the default
        model by its form, so client code naming it keeps working.
        """
        name = requested if requested is not None else self.default_name
        entry = self.entries.get(self.aliases.get(name, name))
        if entry is None and is_openai_image_name(name):
            entry = self.entries.get(self.default_name)
        if entry is None:
            raise model_not_found(name)
        return entry

    def ready(self, requested: str | None, task: Task) -> ReadyModel:
        """The loaded model for a request (404 unknown; 503 loading or failed; 400 if it lacks the task)."""
        entry = self.entry(requested)
        if entry.status == "loading":
            raise APIError(
                503,
                f"Model '{entry.name}' is still loading; retry shortly.",
                type=SERVER_ERROR,
                code="model_loading",
                headers={"retry-after": str(LOADING_RETRY_AFTER_SECONDS)},
            )
        if entry.info is None:
            raise APIError(
                503,
                f"Model '{entry.name}' failed to load: {entry.error}",
                type=SERVER_ERROR,
                code="model_unavailable",
                headers={"x-should-retry": "false"},  # it will not load by itself; tells the openai SDK not to retry
            )
        check_task(entry.info, task)
        name = requested if requested is not None else self.default_name
        return ReadyModel(requested=name, name=entry.name, api_style=api_style_for(name), info=entry.info)

    def model_object(self, model_id: str) -> dict[str, Any]:
        """The OpenAI model object for a name clients may use; 404 if unknown."""
        entry = self.entry(model_id)
        return model_object(
            model_id=model_id,
            model_name=entry.name,
            created=entry.created(),
            owned_by=entry.spec.owned_by,
            status=entry.status,
            error=entry.error,
            info=entry.info,
            max_n=max_n_for(api_style_for(model_id)),
            facts=None if entry.facts is None else entry.facts.as_json(),
        )

    def all_ready(self) -> bool:
        return all(entry.status == "ready" for entry in self.entries.values())

    def readiness(self, engine: Engine, *, with_paths: bool = True) -> dict[str, Any]:
        """Each model's status: ``loading``, ``ready`` with queue figures, or ``failed`` with the loader's reason
        (its file paths replaced by placeholders unless ``with_paths``: the check is public)."""
        report: dict[str, Any] = {}
        for name, entry in self.entries.items():
            item: dict[str, Any] = {"status": entry.status}
            if entry.error is not None:
                item["error"] = entry.error if with_paths else without_paths(entry.error, entry.spec)
            if entry.info is not None:
                item.update(device=entry.info.device, dtype=entry.info.dtype)
                item.update(engine.stats(name) or {})
            report[name] = item
        return report


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/>])/[^\s'\"()\[\],;]*[^\s'\"()\[\],;.]")  # a sentence's full stop is not in it


def without_paths(message: str, spec: ModelSpec) -> str:
    """``message`` with the model's directory and any other absolute path replaced by placeholders."""
    message = message.replace(str(spec.path), "<model directory>")
    return _ABSOLUTE_PATH.sub("<path>", message)


LoadFailed = Callable[[str, str], None]  # (model name, message)


def load_all(
    catalog: Catalog, engine: Engine, settings: Settings, stop: threading.Event, on_failure: LoadFailed | None = None
) -> None:
    """Load every model in turn (run in a background thread); failures are recorded, never raised.

    ``on_failure`` hears of each failure (``easel serve`` stops unless ``--keep-going``).
    """
    for entry in catalog.entries.values():
        if stop.is_set():
            return
        started = time.monotonic()
        spec = entry.spec
        entry.facts = _read_facts(spec)
        try:
            dtype, speed = settings.dtype_for(spec.family), speed_options(settings, spec)
            info = engine.load(ModelToLoad(spec, settings.device, dtype, speed))
        except EngineStopped:  # the server stopped while this model loaded
            return
        except Exception as error:  # the server keeps running and reports it
            # A missing directory or a bad setting has a message written for people; anything else is
            # unexpected, so its type is kept in the message and its traceback goes to the log.
            expected = isinstance(error, (FileNotFoundError, ValueError))
            entry.error = str(error) if expected else f"{type(error).__name__}: {error}"
            entry.status = "failed"
            log.error(
                "model %s failed to load: %s", spec.name, entry.error, exc_info=not isinstance(error, FileNotFoundError)
            )
            if on_failure is not None:
                on_failure(spec.name, entry.error)
            continue
        if stop.is_set():  # the server stopped while this model loaded
            return
        entry.info = info
        entry.load_seconds = time.monotonic() - started
        entry.status = "ready"
        log.info("model %s ready on %s (%s) in %.1f s", spec.name, info.device, info.dtype, entry.load_seconds)


def _read_facts(spec: ModelSpec) -> ModelFacts | None:
    """The directory's licence, parameters, dtypes and size; None (and a log line) when they cannot be read."""
    try:
        return model_facts(spec.path)
    except Exception as error:  # a missing or broken directory: loading reports it properly
        log.debug("model %s: weights not described: %s: %s", spec.name, type(error).__name__, error)
        return None


def speed_options(settings: Settings, spec: ModelSpec | None = None) -> SpeedOptions:
    """The speed settings models load with. Compiling warms up, by default, 1 and 2 images (the batch dimension
    turns symbolic) and the most one pipeline call may hold, which torch compiles apart
    (docs/performance.md, "Fast on a GPU")."""
    largest = max(settings.max_batch_images or max(DEFAULT_MAX_BATCH_IMAGES.values()), MAX_N)
    batches = settings.compile_warmup_batches or warmup_batches_for(largest)
    quantize, step_cache = settings.quantize, settings.step_cache
    if spec is not None:  # the model's easel.toml entry may set its own
        quantize, step_cache, _, _ = settings.savings_for(spec)
    return SpeedOptions(settings.optimize, settings.compile_cache_dir, batches, quantize, step_cache)
