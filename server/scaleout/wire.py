"""What crosses Ray between the ingress and a model replica: plain data only.

An :class:`ImageJob` is plain data with PIL images; it travels with its
images as raw pixels, which cost no encoding (each side's engine makes the
job's control, :class:`pipelines.base.JobControl`, for itself), and with
whether it is a background job (a batch line), which the replica's engine
queues behind its interactive jobs as the ingress's would. A
replica answers a job with a stream of messages: ``accepted`` (it holds the
job now), ``preview`` (partial images), then ``result`` or ``error``.
Errors travel as their kind and fields and are rebuilt as the same exception
types, so ``server.serving.job_errors``' table answers them as it would in one process.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from PIL import Image

from pipelines.base import ImageJob, StagePreset
from pipelines.errors import Cancelled, MissingComponent, NonFiniteOutput

from ..engine.base import EngineStopped, JobResult, Preview, QueueFull

Message = dict[str, Any]
WireImage = tuple[str, int, int, bytes]  # mode, width, height, raw pixels
_IMAGES = ("image", "mask")
_IMAGE_LISTS = ("references",)
_BACKGROUND = "background"  # not an ImageJob field: how the replica's engine queues the job


class RemoteError(RuntimeError):
    """An unexpected error on a replica (its traceback is in the replica's log)."""


def image_to_wire(image: Image.Image) -> WireImage:
    return image.mode, image.width, image.height, image.tobytes()


def image_from_wire(data: WireImage) -> Image.Image:
    mode, width, height, pixels = data
    return Image.frombytes(mode, (width, height), pixels)


def job_to_wire(job: ImageJob, *, background: bool = False) -> Message:
    sent_apart = _IMAGES + _IMAGE_LISTS
    data = {f.name: getattr(job, f.name) for f in fields(job) if f.name not in sent_apart}
    data[_BACKGROUND] = background
    data["preset"] = asdict(job.preset)
    for name in _IMAGES:
        image = getattr(job, name)
        data[name] = None if image is None else image_to_wire(image)
    for name in _IMAGE_LISTS:
        data[name] = [image_to_wire(image) for image in getattr(job, name)]
    return data


def job_from_wire(data: Message) -> ImageJob:
    values = dict(data)
    values.pop(_BACKGROUND, None)
    values["preset"] = StagePreset(**values["preset"])
    for name in _IMAGES:
        if values[name] is not None:
            values[name] = image_from_wire(values[name])
    for name in _IMAGE_LISTS:
        values[name] = [image_from_wire(image) for image in values[name]]
    return ImageJob(**values)


def is_background(data: Message) -> bool:
    """Whether the job is a batch line, to be queued behind interactive jobs (a message without the flag: no)."""
    return bool(data.get(_BACKGROUND, False))


def accepted(replica: str) -> Message:
    return {"kind": "accepted", "replica": replica}


def preview_message(preview: Preview) -> Message:
    return {"kind": "preview", "index": preview.index, "images": [image_to_wire(i) for i in preview.images]}


def preview_from_wire(message: Message) -> Preview:
    return Preview(message["index"], [image_from_wire(i) for i in message["images"]])


def result_message(result: JobResult) -> Message:
    return {
        "kind": "result",
        "images": [image_to_wire(i) for i in result.images],
        "prompt_tokens": result.prompt_tokens,
        "run_seconds": result.run_seconds,
    }


def result_from_wire(message: Message) -> JobResult:
    images = [image_from_wire(i) for i in message["images"]]
    return JobResult(images, message["prompt_tokens"], message["run_seconds"])


def error_message(error: BaseException) -> Message:
    described: Message = {"kind": "error", "type": type(error).__name__, "message": str(error)}
    if isinstance(error, QueueFull):
        described.update(model=error.model, waiting=error.waiting, retry_after=error.retry_after)
    elif isinstance(error, NonFiniteOutput):
        described.update(model=error.model, stage=error.stage)
    elif isinstance(error, ValueError):
        described["type"] = "ValueError"  # a job the backend refuses: a 400, whatever its subclass
    return described


def error_from_wire(message: Message) -> BaseException:
    kind, text = message["type"], message["message"]
    if kind == "QueueFull":
        return QueueFull(message["model"], message["waiting"], message["retry_after"])
    if kind == "NonFiniteOutput":
        return NonFiniteOutput(message["model"], message["stage"])
    rebuilt: dict[str, type[Exception]] = {
        "Cancelled": Cancelled,
        "EngineStopped": EngineStopped,
        "FileNotFoundError": FileNotFoundError,  # a model folder that is not there
        "MissingComponent": MissingComponent,
        "ValueError": ValueError,
    }
    if kind in rebuilt:
        return rebuilt[kind](text)
    return RemoteError(f"{kind}: {text}")
