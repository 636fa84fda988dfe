"""Whole-image edits (no mask) in the Kandinsky backend: the decoder starts from the input, noised to a strength."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.base import Cancelled, ImageJob, JobControl, StagePreset, Ticket
from pipelines.img2img import starting_at, steps_run
from pipelines.kandinsky import KandinskyBackend
from pipelines.loader import load_backend
from pipelines.tiny import build_tiny_kandinsky
from pipelines.walks import combine_embeds
from tests.pipelines.test_batching import BATCH_TOLERANCE, max_difference

FAST = StagePreset(prior_steps=2, prior_guidance=4.0, decoder_steps=4, decoder_guidance=4.0)


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> KandinskyBackend:
    path = build_tiny_kandinsky(tmp_path_factory.mktemp("models") / "tiny-kandinsky")
    return load_backend("tiny", "kandinsky22", path, presets="easel-mini", device="cpu")


def picture(colour: tuple[int, int, int] = (230, 40, 40)) -> Image.Image:
    image = Image.new("RGB", (64, 64), (20, 120, 200))
    image.paste(colour, (8, 8, 40, 40))
    return image


def edit(seeds: tuple[int, ...] = (7,), **kwargs) -> ImageJob:
    values = {"prompt": "a blue square", "image": picture(), "strength": 0.5, **kwargs}
    return ImageJob(task="edit", n=len(seeds), width=64, height=64, seeds=list(seeds), preset=FAST, **values)


def test_a_whole_image_edit_gives_n_images_and_the_same_bytes_for_the_same_seed(backend) -> None:
    first, again, other = backend.run(edit((7, 8))), backend.run(edit((7, 8))), backend.run(edit((9, 10)))
    assert [image.size for image in first] == [(64, 64), (64, 64)]
    assert [image.tobytes() for image in first] == [image.tobytes() for image in again]
    assert first[0].tobytes() != other[0].tobytes()


def test_each_image_depends_on_its_own_seed_alone(backend) -> None:
    pair = backend.run(edit((7, 8)))
    alone = backend.run(edit((8,)))
    assert max_difference(pair[1:], alone) <= BATCH_TOLERANCE


def test_strength_runs_the_end_of_the_schedule_only(backend) -> None:
    timesteps: list[int] = []
    progress: list[tuple[str, int, int]] = []
    hook = backend.decoder_pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: timesteps.append(int(kwargs["timestep"])), with_kwargs=True
    )
    try:
        backend.run(edit(strength=0.5), JobControl(on_progress=lambda *step: progress.append(step)))
    finally:
        hook.remove()
    backend.decoder_pipe.scheduler.set_timesteps(4)
    full = [int(t) for t in backend.decoder_pipe.scheduler.timesteps]
    assert timesteps == full[2:]  # the last two of four steps
    assert [step for step in progress if step[0] == "decoder"] == [("decoder", 1, 2), ("decoder", 2, 2)]
    assert "set_timesteps" not in backend.decoder_pipe.scheduler.__dict__  # the trim is undone after the call


def test_strength_changes_the_result_and_the_input_matters(backend) -> None:
    half, most = backend.run(edit(strength=0.5)), backend.run(edit(strength=0.75))
    other_input = backend.run(edit(strength=0.5, image=picture((250, 230, 40))))
    assert half[0].tobytes() != most[0].tobytes()
    assert half[0].tobytes() != other_input[0].tobytes()


def test_references_join_the_mix_by_their_weights(backend) -> None:
    plain = backend.run(edit(input_image_weight=1.0))
    mixed = backend.run(edit(input_image_weight=1.0, references=[picture((250, 230, 40))]))
    ignored = backend.run(edit(input_image_weight=1.0, references=[picture((250, 230, 40))], image_weights=(1.0, 0.0)))
    assert plain[0].tobytes() != mixed[0].tobytes()
    assert max_difference(plain, ignored) <= 1  # a reference of weight 0 leaves the mix as the image alone


def test_previews_and_cancellation_work_on_the_shorter_schedule(backend) -> None:
    previews: list[int] = []
    backend.run(edit(preview_count=1), JobControl(on_preview=lambda index, images: previews.append(len(images))))
    assert previews == [1]
    with pytest.raises(Cancelled):
        backend.run(edit(), JobControl(should_cancel=lambda: True))


def test_whole_image_edits_batch_apart_from_masked_ones_and_by_strength(backend) -> None:
    mask = Image.new("L", (64, 64), 255)
    keys = {backend.batch_key(job) for job in (edit(), edit(seeds=(3, 4)))}
    assert len(keys) == 1
    assert backend.batch_key(edit(mask=mask)) not in keys
    assert backend.batch_key(edit(strength=0.75)) not in keys


def test_a_batch_of_whole_image_edits_matches_each_alone(backend) -> None:
    jobs = [edit((7,)), edit((8, 9), image=picture((250, 230, 40)), prompt="a green star")]
    batched = backend.run_batch([Ticket(job) for job in jobs]).outcomes
    for job, outcome in zip(jobs, batched, strict=True):
        assert isinstance(outcome, list)
        assert max_difference(outcome, backend.run(edit(tuple(job.seeds), image=job.image, prompt=job.prompt))) <= (
            BATCH_TOLERANCE
        )


def test_bad_strength_and_weights_are_refused_by_the_backend(backend) -> None:
    for job in (edit(strength=0.0), edit(strength=1.5), edit(image_weights=(1.0, 2.0))):
        with pytest.raises(ValueError):
            backend.run(job)


def test_steps_run_and_the_scheduler_trim() -> None:
    assert [steps_run(20, s) for s in (1.0, 0.6, 0.01)] == [20, 12, 1]

    class Scheduler:
        def set_timesteps(self, count: int) -> None:
            self.timesteps = list(range(count, 0, -1))

    scheduler = Scheduler()
    with starting_at(scheduler, 4, 0.5):
        scheduler.set_timesteps(4)
        assert scheduler.timesteps == [2, 1]
    scheduler.set_timesteps(4)
    assert scheduler.timesteps == [4, 3, 2, 1]


def test_combining_embeddings_keeps_one_as_it_is_and_weighs_several() -> None:
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert combine_embeds([a], None) is a
    even = combine_embeds([a, b], None)
    np.testing.assert_allclose(even.numpy(), [[2 * 2**-0.5, 2 * 2**-0.5]], rtol=1e-6)  # halfway, mean length 2
    np.testing.assert_allclose(combine_embeds([a, b], (1.0, 0.0)).numpy(), a.numpy(), rtol=1e-6)


def test_an_inpainting_decoder_also_starts_from_the_input(tmp_path) -> None:
    path = build_tiny_kandinsky(tmp_path / "tiny-inpaint", inpaint=True)
    inpaint = load_backend("tiny-inpaint", "kandinsky22", path, presets="easel-mini", device="cpu")
    timesteps: list[int] = []
    hook = inpaint.decoder_pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: timesteps.append(int(kwargs["timestep"])), with_kwargs=True
    )
    try:
        images = inpaint.run(edit((7, 8), strength=0.5))
        other = inpaint.run(edit((7, 8), strength=0.5, image=picture((250, 230, 40))))
    finally:
        hook.remove()
    assert [image.size for image in images] == [(64, 64)] * 2
    assert images[0].tobytes() != other[0].tobytes()  # the input is where the decoder starts
    assert len(timesteps) == 2 * 2  # two edits, each the last two of four steps
