import random
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pipelines.lab.scenes import COLORS, POSITIONS, SHAPES, Scene, SceneObject, heldout_prompts, render, sample_scene
from pipelines.lab.scorer import ImageScore, ObjectScore, detect_objects, score_image, summarize


@pytest.fixture(scope="module")
def prompts() -> list[tuple[str, Scene]]:
    return heldout_prompts(200, seed=0)


def _summary_of(images: list[Image.Image], scenes: list[Scene]) -> dict:
    return summarize([score_image(image, scene) for image, scene in zip(images, scenes)], scenes)


def test_ground_truth_renders_of_heldout_prompts_score_at_least_98_percent(prompts):
    scenes = [scene for _, scene in prompts]
    summary = _summary_of([render(scene) for scene in scenes], scenes)
    assert summary["color"] >= 0.98
    assert summary["shape"] >= 0.98
    assert summary["position"] >= 0.98
    assert summary["both_correct"] >= 0.95
    assert summary["objects"] == sum(len(s.objects) for s in scenes)


def test_every_shape_color_position_and_size_is_recognised():
    rng = random.Random(5)
    for shape in SHAPES:
        for size in ("small", "large"):
            for position in POSITIONS:
                color = rng.choice(list(COLORS))
                background = rng.choice([c for c in COLORS if c != color])
                scene = Scene(objects=(SceneObject(color, shape, size, position),), background=background)
                assert score_image(render(scene), scene).all_correct, scene


def test_images_of_any_size_are_scored():
    scene = Scene(
        objects=(SceneObject("pink", "heart", "small", "top"), SceneObject("green", "cross", "large", "bottom")),
        background="black",
    )
    assert score_image(render(scene, size=256), scene).all_correct
    assert score_image(render(scene, size=48), scene).all_correct


def test_blurred_noisy_renders_still_score_well(prompts):
    scenes = [scene for _, scene in prompts[:100]]
    noise = np.random.default_rng(0)
    images = []
    for scene in scenes:
        blurred = np.asarray(render(scene).filter(ImageFilter.GaussianBlur(1.2)), dtype=float)
        noisy = blurred + noise.normal(0, 8, blurred.shape)
        images.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    summary = _summary_of(images, scenes)
    assert summary["color"] >= 0.97
    assert summary["shape"] >= 0.93
    assert summary["position"] >= 0.97


def _other(values, *exclude):
    return next(v for v in values if v not in exclude)


def test_wrong_shape_is_marked_wrong(prompts):
    for _, scene in prompts[:40]:
        obj = scene.objects[0]
        changed = replace(obj, shape=_other(SHAPES[::-1], obj.shape))
        score = score_image(render(replace(scene, objects=(changed, *scene.objects[1:]))), scene)
        assert score.objects[0] == ObjectScore(color=True, shape=False, position=True), (scene, changed)
        assert not score.all_correct


def test_wrong_color_is_marked_wrong(prompts):
    for _, scene in prompts[:40]:
        obj = scene.objects[0]
        taken = {o.color for o in scene.objects} | {scene.background}
        changed = replace(obj, color=_other(COLORS, *taken))
        score = score_image(render(replace(scene, objects=(changed, *scene.objects[1:]))), scene)
        assert not score.objects[0].color, (scene, changed)
        assert not score.all_correct


def test_wrong_position_is_marked_wrong(prompts):
    singles = [scene for _, scene in prompts if len(scene.objects) == 1][:40]
    for scene in singles:
        (obj,) = scene.objects
        moved = replace(obj, position=_other(list(POSITIONS)[::-1], obj.position))
        score = score_image(render(replace(scene, objects=(moved,))), scene)
        assert score.objects[0] == ObjectScore(color=True, shape=True, position=False), (scene, moved)


def test_swapped_objects_are_not_both_correct(prompts):
    pairs = [scene for _, scene in prompts if len(scene.objects) == 2][:30]
    for scene in pairs:
        first, second = scene.objects
        swapped = (replace(first, position=second.position), replace(second, position=first.position))
        score = score_image(render(replace(scene, objects=swapped)), scene)
        assert not score.all_correct
        # Whichever blob each object is matched to, it has the other one's colour or place.
        assert not any(o.color and o.position for o in score.objects)


def test_missing_object_scores_nothing_for_it(prompts):
    scene = next(scene for _, scene in prompts if len(scene.objects) == 2)
    score = score_image(render(replace(scene, objects=scene.objects[:1])), scene)
    assert score.objects[0] == ObjectScore(True, True, True)
    assert score.objects[1] == ObjectScore(False, False, False)
    assert not score.all_correct


@pytest.mark.parametrize("color", [(255, 255, 255), (0, 0, 0), COLORS["blue"]])
def test_blank_image_scores_zero(prompts, color):
    scenes = [scene for _, scene in prompts[:20]]
    blank = Image.new("RGB", (64, 64), color)
    assert detect_objects(blank) == []
    summary = _summary_of([blank] * len(scenes), scenes)
    assert summary["color"] == summary["shape"] == summary["position"] == summary["all_correct"] == 0.0


def test_noise_scores_zero(prompts):
    rng = np.random.default_rng(0)
    scenes = [scene for _, scene in prompts[:30]]
    speckle = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in scenes]
    blobs = [
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((64, 64), Image.Resampling.BICUBIC)
        for _ in scenes
    ]
    for images in (speckle, blobs):
        summary = _summary_of(images, scenes)
        assert summary["color"] == summary["shape"] == summary["position"] == 0.0


def test_random_scenes_score_low(prompts):
    rng = random.Random(9)
    scenes = [scene for _, scene in prompts]
    others = [sample_scene(rng, two_object_prob=1.0 if len(s.objects) == 2 else 0.0) for s in scenes]
    summary = _summary_of([render(o) for o in others], scenes)
    assert summary["all_correct"] < 0.05
    assert summary["shape"] < 0.35 and summary["color"] < 0.35 and summary["position"] < 0.5


def test_summarize_counts_and_rates():
    one = Scene(objects=(SceneObject("red", "star", "small", "left"),), background="white")
    two = Scene(objects=one.objects + (SceneObject("blue", "ring", "large", "right"),), background="white")
    scores = [
        ImageScore(objects=[ObjectScore(True, True, True)], all_correct=True),
        ImageScore(objects=[ObjectScore(True, False, True), ObjectScore(True, True, False)], all_correct=False),
    ]
    summary = summarize(scores, [one, two])
    assert summary["color"] == 1.0
    assert summary["shape"] == pytest.approx(2 / 3)
    assert summary["position"] == pytest.approx(2 / 3)
    assert summary["object_correct"] == pytest.approx(1 / 3)
    assert summary["all_correct"] == 0.5
    assert summary["single_correct"] == 1.0
    assert summary["both_correct"] == 0.0
    assert (summary["prompts"], summary["objects"]) == (2, 3)
    assert (summary["single_object_prompts"], summary["two_object_prompts"]) == (1, 1)
    with pytest.raises(ValueError):
        summarize(scores, [one])
