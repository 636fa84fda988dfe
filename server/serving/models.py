"""The models this server offers: their load state, their aliases, and name resolution.

Each entry is ``unloaded``, ``loading``, ``ready`` or ``failed`` (with the
loader's message). What loads when, and what is evicted to make room, is
:mod:`server.serving.residency`'s business; here a request that finds its
model ready holds it (so that it cannot be evicted) until its job is queued.
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

from ..engine.base import DEFAULT_MAX_BATCH_IMAGES, Engine, ModelToLoad
from ..http.errors import SERVER_ERROR, APIError, shown
from ..protocol.images import ApiStyle, api_style_for, check_task, is_openai_image_name, max_n_for
from ..protocol.models import model_object
from ..protocol.tables import MAX_N
from ..settings.config import Settings
from ..settings.model_specs import ModelSpec
from .model_facts import ModelFacts

log = logging.getLogger("easel.models")

LOADING_RETRY_AFTER_SECONDS = 5


Status = Literal["unloaded", "loading", "ready", "failed"]
Tier = Literal["device", "host"]


class ModelEntry:
    """One configured model and where its loading stands. Changed under the catalog's lock."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.status: Status = "unloaded"
        self.info: ModelInfo | None = None  # kept after an unload: it still says what the model can do
        self.error: str | None = None
        self.facts: ModelFacts | None = None  # read from the directory before loading (server.serving.residency)
        self.tier: Tier | None = None  # where its weights are: the device, CPU RAM (the warm tier), or nowhere
        self.device_bytes = 0  # its cost while on the device (weights per copy, copies, working margin)
        self.host_bytes = 0  # its weights while parked in CPU RAM
        self.holds = 0  # requests that found it ready and have not queued their job yet: it may not be evicted
        self.last_used = 0.0  # monotonic time of the last request: the least recently used is evicted first
        self.waits_on_load = False  # requests wait for this load (on demand), rather than 503 (a start-up load)
        self.failures = 0  # loads failed in a row: the back-off before the next try doubles with each
        self.pinned = False  # never evicted nor unloaded when idle (--pin)
        self.retry_at = 0.0  # monotonic time from which a request may try a failed model's load again
        self.replicas: dict[str, int] | None = None  # on Ray: its Serve replicas by state (server.scaleout.serve_state)

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


class NotResident(Exception):
    """The requested model is not on the device now; :mod:`server.serving.residency` brings it."""

    def __init__(self, entry: ModelEntry) -> None:
        super().__init__(entry.name)
        self.entry = entry


class Catalog:
    def __init__(self, settings: Settings) -> None:
        self.entries = {spec.name: ModelEntry(spec) for spec in settings.models}
        for name in settings.pin:
            self.entries[name].pinned = True
        # Loading from the start: the named preloads, else any model might be (which fit is decided on the
        # loading thread, which then marks the others unloaded).
        for name in settings.preload or self.entries:
            self.entries[name].status = "loading"
        self.aliases = dict(settings.aliases)
        self.default_name = settings.default_model_name
        self.lock = threading.Lock()
        self.preloaded: tuple[str, ...] | None = None  # decided once the models' costs are known

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
        """The loaded model for a request, held until :meth:`release` (404 unknown; 503 loading at start;
        400 if it lacks the task); :class:`NotResident` when it must be loaded first."""
        entry = self.entry(requested)
        with self.lock:
            if entry.status != "ready":
                if entry.status == "loading" and not entry.waits_on_load:
                    raise still_loading(entry)
                raise NotResident(entry)
            assert entry.info is not None
            check_task(entry.info, task)
            entry.holds += 1
            entry.last_used = time.monotonic()
        name = requested if requested is not None else self.default_name
        return ReadyModel(requested=name, name=entry.name, api_style=api_style_for(name), info=entry.info)

    def release(self, name: str) -> None:
        """The request that held the model has queued its job (or given up): it may be evicted once idle."""
        entry = self.entries[name]
        with self.lock:
            entry.holds -= 1
            entry.last_used = time.monotonic()

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
            memory=residence(entry),
            replicas=entry.replicas,
            max_n=max_n_for(api_style_for(model_id)),
            facts=None if entry.facts is None else entry.facts.as_json(),
        )

    def all_ready(self) -> bool:
        """The preloaded models have loaded (one unloaded since, when idle, loads again on demand)."""
        if self.preloaded is None:
            return False
        return all(self.entries[name].status in ("ready", "unloaded") for name in self.preloaded) and all(
            self.entries[name].info is not None for name in self.preloaded
        )

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


def residence(entry: ModelEntry) -> dict[str, Any]:
    """Where the model's weights are and what it costs (the ``memory`` field of /v1/models)."""
    return {
        "tier": entry.tier,
        "device_bytes": entry.device_bytes or None,  # None: its weights could not be read
        "host_bytes": entry.host_bytes or None,
        "pinned": entry.pinned,
    }


def still_loading(entry: ModelEntry) -> APIError:
    return APIError(
        503,
        f"Model '{entry.name}' is still loading; retry shortly.",
        type=SERVER_ERROR,
        code="model_loading",
        headers={"retry-after": str(LOADING_RETRY_AFTER_SECONDS)},
    )


def failed_to_load(entry: ModelEntry) -> APIError:
    return APIError(
        503,
        f"Model '{entry.name}' failed to load: {entry.error}",
        type=SERVER_ERROR,
        code="model_unavailable",
        headers={"x-should-retry": "false"},  # retried after a back-off, by a later request; not by the SDK
    )


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/>])/[^\s'\"()\[\],;]*[^\s'\"()\[\],;.]")  # a sentence's full stop is not in it


def without_paths(message: str, spec: ModelSpec) -> str:
    """``message`` with the model's directory and any other absolute path replaced by placeholders."""
    message = message.replace(str(spec.path), "<model directory>")
    return _ABSOLUTE_PATH.sub("<path>", message)


LoadFailed = Callable[[str, str], None]  # (model name, message)


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


def model_to_load(settings: Settings, spec: ModelSpec) -> ModelToLoad:
    """What an engine loads for ``spec``: the same dtype and speed settings in one process and on a Ray replica."""
    return ModelToLoad(spec, settings.device, settings.dtype_for(spec.family), speed_options(settings, spec))
