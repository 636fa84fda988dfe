import random

import numpy as np
import pytest

from pipelines.lab.scenes import (
    COLOR_WORDS,
    COLORS,
    HELDOUT_COLOR_SHAPE_POSITIONS,
    HELDOUT_COLOR_SHAPES,
    POSITION_PAIRS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPE_WORDS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    caption,
    heldout_prompts,
    is_heldout,
    render,
    sample_scene,
)

RELATIONS = {
    ("left", "right"): "to the left of",
    ("right", "left"): "to the right of",
    ("top", "bottom"): "above",
    ("bottom", "top"): "below",
}


@pytest.fixture(scope="module")
def train_scenes() -> list[Scene]:
    rng = random.Random(0)
    return [sample_scene(rng) for _ in range(20_000)]


def test_palette_is_well_separated():
    values = np.array(list(COLORS.values()), dtype=float)
    distances = np.linalg.norm(values[:, None] - values[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert len(COLORS) >= 10
    assert distances.min() > 95


def test_grammar_sizes():
    assert len(SHAPES) >= 6
    assert set(SIZES) == {"small", "large"}
    assert set(POSITIONS) == {
        "center", "left", "right", "top", "bottom", "top left", "top right", "bottom left", "bottom right",
    }  # fmt: skip
    assert 6 <= len(HELDOUT_COLOR_SHAPES) <= 12
    assert 6 <= len(HELDOUT_COLOR_SHAPE_POSITIONS) <= 14


def test_sampling_is_deterministic():
    a, b = random.Random(7), random.Random(7)
    first = [(sample_scene(a), caption(sample_scene(a), a)) for _ in range(50)]
    second = [(sample_scene(b), caption(sample_scene(b), b)) for _ in range(50)]
    assert first == second
    assert heldout_prompts(20, seed=3) == heldout_prompts(20, seed=3)
    assert heldout_prompts(20, seed=3) != heldout_prompts(20, seed=4)


def test_every_attribute_value_is_reachable_in_training(train_scenes):
    objects = [obj for scene in train_scenes for obj in scene.objects]
    assert {o.color for o in objects} == set(COLORS)
    assert {o.shape for o in objects} == set(SHAPES)
    assert {o.size for o in objects} == set(SIZES)
    assert {o.position for o in objects} == set(POSITIONS)
    assert {s.background for s in train_scenes} == set(COLORS)
    # Every training pair not held out shows up, so held-out pairs are the only gaps.
    pairs = {(o.color, o.shape) for o in objects}
    assert pairs == {(c, s) for c in COLORS for s in SHAPES} - HELDOUT_COLOR_SHAPES
    counts = {n: sum(len(s.objects) == n for s in train_scenes) for n in (1, 2)}
    assert 0.30 < counts[2] / len(train_scenes) < 0.40


def test_training_never_contains_a_heldout_combination(train_scenes):
    for scene in train_scenes:
        assert not is_heldout(scene)
        for obj in scene.objects:
            assert (obj.color, obj.shape) not in HELDOUT_COLOR_SHAPES
            assert (obj.color, obj.shape, obj.position) not in HELDOUT_COLOR_SHAPE_POSITIONS


def test_scene_invariants(train_scenes):
    rng = random.Random(1)
    heldout = [sample_scene(rng, split="heldout") for _ in range(2000)]
    for scene in train_scenes + heldout:
        colors = [o.color for o in scene.objects]
        assert scene.background not in colors
        assert len(set(colors)) == len(colors)
        assert 1 <= len(scene.objects) <= 2
        if len(scene.objects) == 2:
            pair = tuple(sorted(o.position for o in scene.objects))
            assert pair in {tuple(sorted(p)) for p in POSITION_PAIRS}


def test_heldout_split_always_holds_a_heldout_combination():
    rng = random.Random(2)
    scenes = [sample_scene(rng, split="heldout") for _ in range(2000)]
    assert all(is_heldout(s) for s in scenes)
    triples_used = {(o.color, o.shape, o.position) for s in scenes for o in s.objects} & HELDOUT_COLOR_SHAPE_POSITIONS
    pairs_used = {(o.color, o.shape) for s in scenes for o in s.objects} & HELDOUT_COLOR_SHAPES
    assert triples_used == HELDOUT_COLOR_SHAPE_POSITIONS
    assert pairs_used == HELDOUT_COLOR_SHAPES


def test_heldout_prompts():
    prompts = heldout_prompts(200, seed=0)
    assert len(prompts) == 200
    assert all(is_heldout(scene) for _, scene in prompts)
    two = sum(len(scene.objects) == 2 for _, scene in prompts)
    assert 60 <= two <= 140
    assert len({text for text, _ in prompts}) > 150


def test_unknown_split_is_refused():
    with pytest.raises(ValueError):
        sample_scene(random.Random(0), split="test")


def _states_position(text: str, scene: Scene, index: int) -> bool:
    obj = scene.objects[index]
    if any(phrase in text for phrase in POSITION_PHRASES[obj.position]):
        return True
    if len(scene.objects) == 2:
        first, second = (o.position for o in scene.objects)
        return RELATIONS.get((first, second), "\0") in text
    return False


def test_captions_state_color_shape_and_position_of_every_object():
    rng = random.Random(3)
    for _ in range(3000):
        scene = sample_scene(rng, two_object_prob=0.5)
        text = caption(scene, rng)
        assert text == text.lower() and text.isascii()
        for i, obj in enumerate(scene.objects):
            named = [f"{c} {s}" for c in COLOR_WORDS[obj.color] for s in SHAPE_WORDS[obj.shape]]
            assert any(n in text for n in named), (text, obj)
            assert _states_position(text, scene, i), (text, obj)


def test_relation_captions_put_the_first_object_in_its_place():
    scene = Scene(
        objects=(SceneObject("red", "star", "large", "right"), SceneObject("blue", "ring", "small", "left")),
        background="white",
    )
    rng = random.Random(0)
    texts = {caption(scene, rng) for _ in range(200)}
    relational = [t for t in texts if " of " in t]
    assert relational and all("star to the right of a" in t for t in relational)
    assert not any("to the left of" in t for t in texts)


def test_captions_are_varied():
    scene = Scene(objects=(SceneObject("gray", "circle", "small", "top left"),), background="black")
    rng = random.Random(0)
    texts = {caption(scene, rng) for _ in range(300)}
    assert len(texts) > 40
    assert any("black" in t for t in texts) and any("black" not in t for t in texts)
    assert any("small" in t or "little" in t for t in texts)


def test_render_size_mode_and_determinism():
    scene = Scene(
        objects=(SceneObject("red", "star", "large", "left"), SceneObject("blue", "heart", "large", "right")),
        background="white",
    )
    image = render(scene)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert render(scene, size=96).size == (96, 96)
    assert render(scene).tobytes() == image.tobytes()
    pixels = np.asarray(image)
    assert tuple(pixels[0, 0]) == COLORS["white"]
    assert tuple(pixels[32, 16]) == COLORS["red"]
    assert tuple(pixels[32, 48]) == COLORS["blue"]
    # Anti-aliased: edge pixels blend object and background.
    distinct = {tuple(p) for p in pixels.reshape(-1, 3)}
    assert len(distinct) > 10


def test_two_large_objects_never_touch():
    for first, second in POSITION_PAIRS:
        scene = Scene(
            objects=(SceneObject("red", "square", "large", first), SceneObject("blue", "square", "large", second)),
            background="white",
        )
        pixels = np.asarray(render(scene)).astype(int)
        background = np.abs(pixels - np.array(COLORS["white"])).sum(-1) == 0
        # The straight line between the two centres crosses background.
        (x0, y0), (x1, y1) = POSITIONS[first], POSITIONS[second]
        line = [(round(64 * (x0 + t * (x1 - x0))), round(64 * (y0 + t * (y1 - y0)))) for t in np.linspace(0, 1, 200)]
        assert any(background[y, x] for x, y in line)


def test_every_shape_renders_distinctly_at_both_sizes():
    masks = {}
    for shape in SHAPES:
        for size in SIZES:
            scene = Scene(objects=(SceneObject("black", shape, size, "center"),), background="white")
            masks[shape, size] = (np.asarray(render(scene).convert("L")) < 128).tobytes()
    assert len(set(masks.values())) == len(masks)
