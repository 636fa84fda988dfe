"""The models this server offers: their load state, their aliases, and name resolution.

Models load in a background thread after the server starts listening, so each
entry is ``loading``, ``ready`` or ``failed`` (with the loader's message).

The name a client asks for decides the response style (:data:`ApiStyle`):
``dall-e-2``, ``dall-e-3``, GPT image names (``gpt-image-*``,
``chatgpt-image-*``), or ``easel`` for everything else (local model names,
custom aliases), which behaves like ``dall-e-2`` and accepts every field.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Literal

from pipelines.base import ImageBackend

from .config import ModelSpec, Settings
from .errors import SERVER_ERROR, APIError

log = logging.getLogger("easel.models")

ApiStyle = Literal["dall-e-2", "dall-e-3", "gpt-image", "easel"]
Loader = Callable[..., ImageBackend]  # pipelines.loader.load_backend's signature
LOADING_RETRY_AFTER_SECONDS = 5


def api_style_for(name: str) -> ApiStyle:
    if name == "dall-e-2":
        return "dall-e-2"
    if name == "dall-e-3":
        return "dall-e-3"
    if name.startswith(("gpt-image", "chatgpt-image")):
        return "gpt-image"
    return "easel"


class ModelEntry:
    """One configured model and where its loading stands."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.status: Literal["loading", "ready", "failed"] = "loading"
        self.backend: ImageBackend | None = None
        self.error: str | None = None
        self.load_seconds: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def created(self) -> int:
        if self.backend is not None:
            return self.backend.info.created
        try:
            return int(self.spec.path.stat().st_mtime)
        except OSError:
            return 0


@dataclass(frozen=True)
class Resolved:
    requested: str  # the name the client used (alias or model)
    entry: ModelEntry
    api_style: ApiStyle


def model_not_found(name: str) -> APIError:
    return APIError(
        404,
        f"The model `{name}` does not exist or you do not have access to it.",
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

    def resolve(self, requested: str | None) -> Resolved:
        """The entry for a requested name (``None``: the default model); 404 if unknown."""
        name = requested if requested is not None else self.default_name
        target = self.aliases.get(name, name)
        entry = self.entries.get(target)
        if entry is None:
            raise model_not_found(name)
        return Resolved(requested=name, entry=entry, api_style=api_style_for(name))

    def ready_backend(self, resolved: Resolved) -> ImageBackend:
        """The loaded backend, or a 503 saying it is loading (retry) or failed (with the reason)."""
        entry = resolved.entry
        if entry.status == "ready" and entry.backend is not None:
            return entry.backend
        if entry.status == "loading":
            raise APIError(
                503,
                f"Model '{entry.name}' is still loading; retry shortly.",
                type=SERVER_ERROR,
                code="model_loading",
                headers={"retry-after": str(LOADING_RETRY_AFTER_SECONDS)},
            )
        raise APIError(
            503,
            f"Model '{entry.name}' failed to load: {entry.error}",
            type=SERVER_ERROR,
            code="model_unavailable",
            headers={"x-should-retry": "false"},  # it will not load by itself; tells the openai SDK not to retry
        )

    def all_ready(self) -> bool:
        return all(entry.status == "ready" for entry in self.entries.values())


def load_all(
    catalog: Catalog,
    loader: Loader,
    on_ready: Callable[[str, ImageBackend], None],
    settings: Settings,
    stop: threading.Event,
) -> None:
    """Load every model in turn (run in a background thread); failures are recorded, never raised."""
    for entry in catalog.entries.values():
        if stop.is_set():
            return
        started = time.monotonic()
        spec = entry.spec
        try:
            backend = loader(spec.name, spec.family, spec.path, presets=spec.presets, device=settings.device, dtype=settings.dtype)
            if stop.is_set():  # the server stopped while this model loaded
                return
            on_ready(spec.name, backend)
        except Exception as error:  # the server keeps running and reports it
            entry.error = str(error) if isinstance(error, (FileNotFoundError, ValueError)) else f"{type(error).__name__}: {error}"
            entry.status = "failed"
            log.error("model %s failed to load: %s", spec.name, entry.error, exc_info=not isinstance(error, FileNotFoundError))
            continue
        entry.backend = backend
        entry.load_seconds = time.monotonic() - started
        entry.status = "ready"
        log.info("model %s ready on %s (%s) in %.1f s", spec.name, backend.info.device, backend.info.dtype, entry.load_seconds)
