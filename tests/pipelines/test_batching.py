"""Cross-request batching in the Kandinsky backend: each job gets its own images, leaves alone, fails alone."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from pipelines.base import BatchRows, Cancelled, ImageJob, JobControl, StagePreset, Ticket
from pipelines.kandinsky import KandinskyBackend
from pipelines.loader import load_backend
from pipelines.tiny import build_tiny_kandinsky

# Pixels of a job batched with others may differ from the same job alone: batched matrix products
# round differently. Measured on these tiny models: up to 1 grey level, 4 for an edit
# (docs/serving.md, "Reproducibility").
BATCH_TOLERANCE = 6
FAST = StagePreset(prior_steps=2, prior_guidance=4.0, decoder_steps=4, decoder_guidance=4.0)


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> KandinskyBackend:
    path = build_tiny_kandinsky(tmp_path_factory.mktemp("models") / "tiny-kandinsky")
    return load_backend("tiny", "kandinsky22", path, presets="easel-mini", device="cpu")


def job(prompt: str = "a red circle", seeds: tuple[int, ...] = (7,), task: str = "generate", **kwargs) -> ImageJob:
    return ImageJob(
        task=task,  # type: ignore[arg-type]
        n=len(seeds),
        width=64,
        height=64,
        seeds=list(seeds),
        preset=FAST,
        prompt=prompt,
        **kwargs,
    )


def max_difference(a: list[Image.Image], b: list[Image.Image]) -> int:
    assert len(a) == len(b)
    return max(int(np.abs(np.asarray(x, int) - np.asarray(y, int)).max()) for x, y in zip(a, b))


def picture() -> Image.Image:
    image = Image.new("RGB", (64, 64), (20, 120, 200))
    image.paste((230, 40, 40), (8, 8, 40, 40))
    return image


def mask(box: tuple[int, int, int, int]) -> Image.Image:
    repaint = Image.new("L", (64, 64), 0)
    repaint.paste(255, box)
    return repaint


def makers() -> dict[str, list]:
    """Three jobs per task, each different in prompt, negative prompt, seeds and n."""
    image = picture()
    return {
        "generate": [
            lambda: job("a red circle", (1, 2)),
            lambda: job("a blue square on the left", (7,), negative_prompt="green"),
            lambda: job("a cat", (3, 4, 5)),
        ],
        "variation": [
            lambda: job("", (1,), "variation", image=image),
            lambda: job("", (5, 6), "variation", image=image),
        ],
        "edit": [
            lambda: job("a star", (1,), "edit", image=image, mask=mask((0, 0, 32, 32))),
            lambda: job("a heart", (2, 3), "edit", image=image, mask=mask((20, 20, 60, 50)), negative_prompt="blue"),
        ],
    }


@pytest.mark.parametrize("task", ["generate", "variation", "edit"])
def test_every_job_of_a_batch_gets_its_own_images(backend, task):
    jobs = makers()[task]
    alone = [backend.run(make()) for make in jobs]
    result = backend.run_batch([Ticket(make()) for make in jobs])
    for images, own in zip(result.outcomes, alone):
        assert isinstance(images, list) and len(images) == len(own)
        assert max_difference(images, own) <= BATCH_TOLERANCE
    # Nothing cross-wired: each job's images are far from every other job's.
    for (i, a), (j, b) in itertools.combinations(enumerate(result.outcomes), 2):
        assert max_difference(a[:1], b[:1]) > 20, (i, j)  # type: ignore[index]


def test_a_job_alone_in_a_batch_is_byte_identical_to_a_run(backend):
    for make in makers()["generate"]:
        assert max_difference(backend.run_batch([Ticket(make())]).outcomes[0], backend.run(make())) == 0  # type: ignore[arg-type]


def test_a_cancelled_job_leaves_at_the_next_decoder_step_and_the_others_go_on(backend):
    sizes: list[int] = []
    hook = backend.decoder_pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(kwargs["sample"].shape[0]), with_kwargs=True
    )
    checks = itertools.count()  # checked once before the call, then after every decoder step
    leaving = Ticket(job("a cat", (3, 4, 5)), JobControl(should_cancel=lambda: next(checks) >= 2))  # after step 2
    staying = [Ticket(job("a red circle", (1, 2))), Ticket(job("a blue square", (9,)))]
    try:
        result = backend.run_batch([staying[0], leaving, staying[1]])
    finally:
        hook.remove()
    assert isinstance(result.outcomes[1], Cancelled)
    # Classifier-free guidance doubles the rows: 6 of the 12 belong to the job that left.
    assert sizes == [12, 12, 6, 6]
    alone = [backend.run(job("a red circle", (1, 2))), backend.run(job("a blue square", (9,)))]
    assert max_difference(result.outcomes[0], alone[0]) <= BATCH_TOLERANCE  # type: ignore[arg-type]
    assert max_difference(result.outcomes[2], alone[1]) <= BATCH_TOLERANCE  # type: ignore[arg-type]


def test_when_every_job_leaves_the_call_ends(backend):
    leaving = JobControl(should_cancel=lambda: True)
    result = backend.run_batch([Ticket(job(), leaving), Ticket(job("a cat", (2,)), leaving)])
    assert all(isinstance(outcome, Cancelled) for outcome in result.outcomes)


def test_a_job_the_model_cannot_run_fails_alone(backend):
    bad = job()
    bad.width += 1  # not a multiple of the model's size multiple
    good = job("a cat", (2,))
    result = backend.run_batch([Ticket(bad), Ticket(good)])
    assert isinstance(result.outcomes[0], ValueError) and "multiple" in str(result.outcomes[0])
    assert max_difference(result.outcomes[1], backend.run(job("a cat", (2,)))) == 0  # type: ignore[arg-type]


def test_each_job_gets_its_own_previews(backend):
    seen: dict[str, list[tuple[int, int]]] = {"one": [], "two": [], "none": []}

    def collector(name: str):
        return lambda index, images: seen[name].append((index, len(images)))

    tickets = [
        Ticket(job("a red circle", (1, 2), preview_count=1), JobControl(on_preview=collector("one"))),
        Ticket(job("a cat", (3,), preview_count=2), JobControl(on_preview=collector("two"))),
        Ticket(job("a star", (4,), preview_count=0), JobControl(on_preview=collector("none"))),
    ]
    backend.run_batch(tickets)
    assert seen == {"one": [(0, 2)], "two": [(0, 1), (1, 1)], "none": []}


def test_batch_keys_keep_incompatible_jobs_apart(backend, tmp_path):
    assert backend.batch_key(job("a", (1,))) == backend.batch_key(job("b", (2, 3), negative_prompt="x"))
    slower = StagePreset(prior_steps=2, prior_guidance=4.0, decoder_steps=8, decoder_guidance=4.0)
    assert backend.batch_key(job()) != backend.batch_key(ImageJob("generate", 1, 64, 64, [1], slower, prompt="a"))
    assert backend.batch_key(job()) != backend.batch_key(job(task="variation", image=picture()))
    inpaint = load_backend("inpaint", "kandinsky22", build_tiny_kandinsky(tmp_path / "inpaint", inpaint=True))
    # diffusers' inpaint decoder applies the first row's image and mask to every row: those edits run alone.
    assert inpaint.batch_key(job(task="edit", image=picture(), mask=mask((0, 0, 8, 8)))) is None


def test_batch_rows_drop_the_jobs_that_leave():
    flags = {"b": False}
    a, b = Ticket(job("a", (1, 2))), Ticket(job("b", (3,)), JobControl(should_cancel=lambda: flags["b"]))
    rows = BatchRows([a, b])
    assert rows.drop_leaving() is None and rows.size == 3
    flags["b"] = True
    assert rows.drop_leaving().tolist() == [True, True, False]  # type: ignore[union-attr]
    assert rows.tickets == [a] and rows.left == [b] and rows.size == 2
    outcomes = rows.outcomes([Image.new("RGB", (1, 1)), Image.new("RGB", (1, 1))])
    assert len(outcomes[a]) == 2 and isinstance(outcomes[b], Cancelled)  # type: ignore[arg-type]


def test_what_loading_computes_does_not_depend_on_the_loading_threads_count(tmp_path_factory):
    """The cached zero-image embedding is every call's negative embedding: made on one thread, whoever loads.

    CPU sums change in their last bits with the thread count; when it followed the
    loading thread's, a server loaded after ``torch.set_num_threads(1)`` drew other
    pixels than one loaded on two threads.
    """
    import threading

    import torch

    path = build_tiny_kandinsky(tmp_path_factory.mktemp("models") / "tiny-kandinsky")
    embeds = []

    def load(threads: int) -> None:
        torch.set_num_threads(threads)
        embeds.append(load_backend("tiny", "kandinsky22", path, device="cpu")._zero_image_embed)

    for threads in (1, 2):
        loader = threading.Thread(target=load, args=(threads,))
        loader.start()
        loader.join()
    assert torch.equal(embeds[0], embeds[1])
