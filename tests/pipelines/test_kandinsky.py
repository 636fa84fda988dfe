"""Kandinsky 2.2 backend on tiny random-weight models built in a temporary directory."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from pipelines.base import Cancelled, ImageJob, JobControl, StagePreset
from pipelines.inpaint import composite_unmasked
from pipelines.kandinsky import KandinskyBackend
from pipelines.loader import load_backend
from pipelines.presets import presets_for
from pipelines.tiny import build_tiny_kandinsky

FAST = StagePreset(prior_steps=2, prior_guidance=4.0, decoder_steps=4, decoder_guidance=4.0)
PROMPT = "a red cat on a hill, Zürich ☃"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_kandinsky(tmp_path_factory.mktemp("models") / "tiny-kandinsky")


@pytest.fixture(scope="module")
def backend(model_dir) -> KandinskyBackend:
    return load_backend("tiny", "kandinsky22", model_dir, presets="easel-mini", device="cpu")


@pytest.fixture(scope="module")
def inpaint_backend(tmp_path_factory) -> KandinskyBackend:
    path = build_tiny_kandinsky(tmp_path_factory.mktemp("models") / "tiny-inpaint", inpaint=True)
    return load_backend("tiny-inpaint", "kandinsky22", path, device="cpu")


def job(task="generate", n=1, size=(64, 64), seeds=None, **kwargs) -> ImageJob:
    seeds = seeds if seeds is not None else list(range(7, 7 + n))
    return ImageJob(task=task, n=n, width=size[0], height=size[1], seeds=seeds, preset=FAST, **kwargs)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def test_tiny_build_writes_combined_pipeline_layout(model_dir):
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "KandinskyV22CombinedPipeline"
    assert {"prior_prior", "prior_text_encoder", "prior_image_encoder", "unet", "movq"} <= set(index)
    assert json.loads((model_dir / "easel.json").read_text()) == {"native_size": 64}


def test_tiny_build_is_deterministic(tmp_path, model_dir):
    again = build_tiny_kandinsky(tmp_path / "again")
    for part in ("unet/diffusion_pytorch_model.safetensors", "prior_text_encoder/model.safetensors"):
        assert (again / part).read_bytes() == (model_dir / part).read_bytes()


def test_model_info(backend):
    info = backend.info
    assert info.family == "kandinsky22"
    assert info.native_area == 64 * 64
    assert info.size_multiple == 4  # tiny MoVQ: 2 blocks -> scale factor 2 -> multiples of 2**2
    assert info.fixed_native_size is None
    assert info.tasks == {"generate", "variation", "edit"}
    assert info.presets == presets_for("easel-mini")
    assert set(info.parameter_counts) == {"text_encoder", "image_encoder", "prior", "unet", "movq"}
    assert all(count > 1000 for count in info.parameter_counts.values())
    assert (info.device, info.dtype, info.supports_negative_prompt) == ("cpu", "float32", True)


def test_native_size_from_easel_json_pair(tmp_path):
    path = build_tiny_kandinsky(tmp_path / "wide")
    (path / "easel.json").write_text(json.dumps({"native_size": [96, 64], "max_side": 1024}))
    info = load_backend("wide", "kandinsky22", path, device="cpu").info
    assert (info.native_area, info.max_side) == (96 * 64, 1024)


def test_count_tokens(backend):
    assert backend.count_tokens("a red cat") == 3
    assert backend.count_tokens("") == 0


@pytest.mark.parametrize("size", [(64, 64), (80, 52)])
def test_generate_sizes(backend, size):
    images = backend.run(job(size=size, prompt=PROMPT))
    assert [(image.size, image.mode) for image in images] == [(size, "RGB")]


def test_non_square_native_size_is_honoured(backend):
    size = backend.info.native_size_for(1536, 1024)
    assert size == (80, 52)
    assert backend.run(job(size=size, prompt=PROMPT))[0].size == size


def test_size_not_a_multiple_is_refused(backend):
    with pytest.raises(ValueError, match="multiple of 4"):
        backend.run(job(size=(66, 64), prompt=PROMPT))


class CallCounter:
    """Forwards to a pipeline and counts its calls."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.pipe(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipe, name)


def test_n_images_in_one_batched_call_each_stage(backend, monkeypatch):
    prior, decoder = CallCounter(backend.prior_pipe), CallCounter(backend.decoder_pipe)
    monkeypatch.setattr(backend, "prior_pipe", prior)
    monkeypatch.setattr(backend, "decoder_pipe", decoder)
    images = backend.run(job(n=3, prompt=PROMPT, negative_prompt="blurry"))
    assert len(images) == 3
    assert (prior.calls, decoder.calls) == (1, 1)


def test_same_seed_same_bytes_different_seeds_differ(backend):
    first = backend.run(job(n=2, seeds=[11, 12], prompt=PROMPT))
    again = backend.run(job(n=2, seeds=[11, 12], prompt=PROMPT))
    assert [i.tobytes() for i in first] == [i.tobytes() for i in again]
    assert first[0].tobytes() != first[1].tobytes()


def test_image_depends_only_on_its_own_seed(backend):
    # Not bit-exact: CPU kernels round differently for batch sizes 1 and 2.
    pair = backend.run(job(n=2, seeds=[21, 22], prompt=PROMPT))
    single = backend.run(job(n=1, seeds=[22], prompt=PROMPT))
    other = backend.run(job(n=1, seeds=[23], prompt=PROMPT))
    assert np.abs(pixels(pair[1]) - pixels(single[0])).max() <= 2
    assert np.abs(pixels(other[0]) - pixels(single[0])).mean() > 5


def test_negative_prompt_changes_the_image(backend):
    plain = backend.run(job(seeds=[5], prompt=PROMPT))[0]
    negative = backend.run(job(seeds=[5], prompt=PROMPT, negative_prompt="blue dog"))[0]
    assert plain.tobytes() != negative.tobytes()


def test_zero_image_embedding_is_computed_once(backend, monkeypatch):
    encoder = backend.prior_pipe.image_encoder
    calls = []
    monkeypatch.setattr(
        encoder, "forward", lambda *a, **k: calls.append(1) or encoder.__class__.forward(encoder, *a, **k)
    )
    backend.run(job(n=2, prompt=PROMPT))
    assert calls == []


def test_previews(backend):
    seen: list[tuple[int, list[tuple[int, int]]]] = []
    images = backend.run(
        job(n=2, size=(80, 52), prompt=PROMPT, preview_count=2),
        JobControl(on_preview=lambda i, ims: seen.append((i, [x.size for x in ims]))),
    )
    assert seen == [(0, [(80, 52)] * 2), (1, [(80, 52)] * 2)]
    assert len(images) == 2


def test_more_previews_than_steps_allow_gives_one_per_step_but_the_last(backend):
    seen = []
    backend.run(job(prompt=PROMPT, preview_count=10), JobControl(on_preview=lambda i, ims: seen.append(i)))
    assert seen == [0, 1, 2]  # 4 decoder steps


def test_cancellation_during_the_prior_and_the_decoder(backend):
    for checks_before_cancel in (1, FAST.prior_steps + 2):
        answers = iter([False] * checks_before_cancel + [True] * 100)
        with pytest.raises(Cancelled):
            backend.run(job(prompt=PROMPT), JobControl(should_cancel=lambda answers=answers: next(answers)))


def noise_image(size, seed=0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8))


def test_variation(backend):
    source = noise_image((150, 100))
    images = backend.run(job(task="variation", n=2, size=(80, 52), image=source))
    assert [i.size for i in images] == [(80, 52), (80, 52)]
    assert images[0].tobytes() != images[1].tobytes()
    other = backend.run(job(task="variation", n=1, size=(80, 52), seeds=[7], image=noise_image((150, 100), 1)))
    assert other[0].tobytes() != images[0].tobytes()


def masked_psnr(a: Image.Image, b: Image.Image, keep: np.ndarray) -> float:
    error = ((pixels(a) - pixels(b)) ** 2)[keep].mean()
    return float("inf") if error == 0 else 10 * np.log10(255**2 / error)


@pytest.mark.parametrize("which", ["blended", "inpaint_weights"])
def test_edit_keeps_unmasked_pixels(backend, inpaint_backend, which):
    model = backend if which == "blended" else inpaint_backend
    source = noise_image((150, 100), 3)
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (40, 20, 110, 80))
    images = model.run(job(task="edit", n=2, size=(80, 52), image=source, mask=mask, prompt="a blue dog"))
    assert [i.size for i in images] == [(80, 52), (80, 52)]
    keep = np.asarray(mask) < 128
    for image in images:
        restored = composite_unmasked(source, image.resize(source.size, Image.Resampling.BICUBIC), mask)
        assert restored.size == source.size
        assert masked_psnr(restored, source, keep) >= 35
        assert masked_psnr(restored, source, ~keep) < 35  # the masked area was repainted
    # At native size too, the backend already kept the (resized) original outside the mask.
    native_source = source.resize((80, 52), Image.Resampling.BICUBIC)
    native_keep = np.asarray(mask.resize((80, 52), Image.Resampling.BILINEAR)) == 0
    assert masked_psnr(images[0], native_source, native_keep) == float("inf")


def test_edit_previews_and_generation_with_inpaint_weights(inpaint_backend):
    seen = []
    images = inpaint_backend.run(
        job(n=2, prompt=PROMPT, preview_count=1), JobControl(on_preview=lambda i, ims: seen.append(len(ims)))
    )
    assert [i.size for i in images] == [(64, 64)] * 2
    assert seen == [2]


def unet_batches(model: KandinskyBackend, monkeypatch) -> list[tuple[int, int]]:
    """Records (timestep, batch rows) of every decoder UNet call."""
    unet = model.decoder_pipe.unet
    calls: list[tuple[int, int]] = []

    def forward(sample, timestep, *args, **kwargs):
        calls.append((int(timestep), sample.shape[0]))
        return type(unet).forward(unet, sample, timestep, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", forward)
    return calls


def decoder_timesteps(model: KandinskyBackend, steps: int) -> list[int]:
    scheduler = model.decoder_pipe.scheduler
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


@pytest.mark.parametrize(
    ("which", "task"),
    [
        ("blended", "generate"),
        ("blended", "edit"),
        ("blended", "variation"),
        ("inpaint_weights", "generate"),
        ("inpaint_weights", "edit"),
    ],
)
def test_decoder_guidance_stops_below_its_timestep(backend, inpaint_backend, monkeypatch, which, task):
    model = backend if which == "blended" else inpaint_backend
    timesteps = decoder_timesteps(model, FAST.decoder_steps)
    threshold = timesteps[1] + 1  # guided at timesteps[0] only: from this timestep up
    source = noise_image((80, 52), 4)
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (10, 10, 50, 40))
    inputs = {"prompt": PROMPT} if task == "generate" else {"image": source}
    if task == "edit":
        inputs.update(prompt=PROMPT, mask=mask)
    calls = unet_batches(model, monkeypatch)
    preset = replace(FAST, decoder_guidance_min_timestep=threshold)
    images = model.run(replace(job(task=task, n=2, size=(80, 52), **inputs), preset=preset))
    assert [i.size for i in images] == [(80, 52)] * 2
    assert calls == [(timesteps[0], 4)] + [(t, 2) for t in timesteps[1:]]
    calls.clear()
    model.run(job(task=task, n=2, size=(80, 52), **inputs))
    assert calls == [(t, 4) for t in timesteps]  # without the setting, every step is guided


def test_decoder_guidance_interval_leaves_guided_steps_alone_and_keeps_the_conditional_half(backend):
    plain = backend.run(job(n=2, prompt=PROMPT, negative_prompt="blue dog"))
    never_stops = replace(FAST, decoder_guidance_min_timestep=0)
    assert [
        i.tobytes()
        for i in backend.run(replace(job(n=2, prompt=PROMPT, negative_prompt="blue dog"), preset=never_stops))
    ] == [i.tobytes() for i in plain]
    # With guidance barely above 1 a guided step is the conditional prediction; the unguided
    # steps after the first must be that too, not the negative prompt's.
    barely = replace(FAST, decoder_guidance=1.0001)
    stops_early = replace(barely, decoder_guidance_min_timestep=decoder_timesteps(backend, FAST.decoder_steps)[1] + 1)
    guided = backend.run(replace(job(seeds=[3], prompt=PROMPT, negative_prompt="blue dog"), preset=barely))[0]
    interval = backend.run(replace(job(seeds=[3], prompt=PROMPT, negative_prompt="blue dog"), preset=stops_early))[0]
    negative = backend.run(replace(job(seeds=[3], prompt="blue dog", negative_prompt=PROMPT), preset=barely))[0]
    assert np.abs(pixels(guided) - pixels(interval)).max() <= 2
    assert np.abs(pixels(negative) - pixels(interval)).mean() > 5
    # Above the first timestep, no step is guided: the first runs unguided as well.
    with pytest.MonkeyPatch.context() as patch:
        calls = unet_batches(backend, patch)
        backend.run(replace(job(n=2, prompt=PROMPT), preset=replace(FAST, decoder_guidance_min_timestep=1000)))
    assert [rows for _, rows in calls] == [2] * FAST.decoder_steps
    # The setting does not outlive its job.
    assert [i.tobytes() for i in backend.run(job(n=2, prompt=PROMPT, negative_prompt="blue dog"))] == [
        i.tobytes() for i in plain
    ]


def test_missing_directory_says_how_to_get_the_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="`easel pull kandinsky-2-2`"):
        load_backend("kandinsky-2.2", "kandinsky22", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="python -m pipelines.lab.training.train"):
        load_backend("easel-mini", "kandinsky22", tmp_path, presets="easel-mini")


def test_unknown_family_and_presets(tmp_path):
    with pytest.raises(ValueError, match="family"):
        load_backend("x", "stable-diffusion", tmp_path)
    with pytest.raises(ValueError, match="preset"):
        load_backend("x", "kandinsky22", tmp_path, presets="nope")
