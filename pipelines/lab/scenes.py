"""The procedural scene grammar easel-mini is trained and evaluated on.

A scene is one or two coloured shapes on a plain background. :func:`sample_scene`
draws scenes, :func:`caption` describes them in varied English, :func:`render`
draws them. Some colour+shape pairs and colour+shape+position triples are held
out of training entirely, so the evaluation measures whether the model composes
attributes it has only seen separately.

Every caption states each object's colour, shape and position; size and
background are stated only sometimes (the renderer still picks them).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cache

from PIL import Image, ImageDraw

# Far apart in RGB so a pixel classifier tells them apart even in blurry images.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 35),
    "orange": (240, 125, 10),
    "yellow": (250, 230, 40),
    "green": (40, 170, 50),
    "blue": (30, 70, 220),
    "purple": (130, 40, 180),
    "pink": (245, 120, 190),
    "brown": (120, 70, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "cyan": (30, 210, 220),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "ring", "diamond", "cross")

# Object radius as a fraction of the image side: about 10 px and 14 px at 64x64.
# Left and right centres are 32 px apart, so two large objects keep a 4 px gap.
SIZES: dict[str, float] = {"small": 0.15, "large": 0.22}

_NEAR, _FAR = 0.25, 0.75
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "left": (_NEAR, 0.5),
    "right": (_FAR, 0.5),
    "top": (0.5, _NEAR),
    "bottom": (0.5, _FAR),
    "top left": (_NEAR, _NEAR),
    "top right": (_FAR, _NEAR),
    "bottom left": (_NEAR, _FAR),
    "bottom right": (_FAR, _FAR),
}

# Two objects only ever sit in one of these pairs: far enough apart never to
# overlap at the large size, and each pair has an unambiguous relation.
POSITION_PAIRS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("top", "bottom"),
    ("top left", "bottom right"),
    ("top right", "bottom left"),
)

HELDOUT_COLOR_SHAPES: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("blue", "heart"),
        ("green", "ring"),
        ("yellow", "square"),
        ("purple", "circle"),
        ("orange", "triangle"),
        ("pink", "diamond"),
        ("cyan", "cross"),
    }
)

HELDOUT_COLOR_SHAPE_POSITIONS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("white", "circle", "top left"),
        ("brown", "square", "bottom right"),
        ("black", "triangle", "right"),
        ("gray", "star", "left"),
        ("red", "heart", "top"),
        ("blue", "diamond", "bottom"),
        ("green", "cross", "center"),
        ("yellow", "ring", "top right"),
        ("purple", "star", "bottom left"),
        ("orange", "circle", "center"),
    }
)

# Words the captions use; the first of each list is the canonical name.
COLOR_WORDS: dict[str, tuple[str, ...]] = {name: (name,) for name in COLORS} | {
    "gray": ("gray", "grey"),
    "purple": ("purple", "violet"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {name: (name,) for name in SHAPES} | {
    "circle": ("circle", "disk"),
    "ring": ("ring", "hollow circle"),
    "cross": ("cross", "plus sign"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "center": ("in the center", "in the middle", "in the centre", "at the center"),
    "left": ("on the left", "on the left side", "at the left"),
    "right": ("on the right", "on the right side", "at the right"),
    "top": ("at the top", "near the top", "at the top of the picture"),
    "bottom": ("at the bottom", "near the bottom", "at the bottom of the picture"),
    "top left": ("in the top left corner", "in the upper left", "in the top-left corner", "at the top left"),
    "top right": ("in the top right corner", "in the upper right", "in the top-right corner", "at the top right"),
    "bottom left": (
        "in the bottom left corner",
        "in the lower left",
        "in the bottom-left corner",
        "at the bottom left",
    ),
    "bottom right": (
        "in the bottom right corner",
        "in the lower right",
        "in the bottom-right corner",
        "at the bottom right",
    ),
}

SPLITS = ("train", "heldout")
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str


def object_is_heldout(obj: SceneObject) -> bool:
    return (obj.color, obj.shape) in HELDOUT_COLOR_SHAPES or (
        obj.color,
        obj.shape,
        obj.position,
    ) in HELDOUT_COLOR_SHAPE_POSITIONS


def is_heldout(scene: Scene) -> bool:
    """True when any object is a held-out colour+shape pair or colour+shape+position triple."""
    return any(object_is_heldout(obj) for obj in scene.objects)


# --- sampling ---------------------------------------------------------------


def sample_scene(rng: random.Random, *, split: str = "train", two_object_prob: float = 0.35) -> Scene:
    """A random scene; ``train`` never contains a held-out combination, ``heldout`` always does."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    positions = list(rng.choice(POSITION_PAIRS)) if rng.random() < two_object_prob else [rng.choice(list(POSITIONS))]
    rng.shuffle(positions)
    colors = rng.sample(list(COLORS), len(positions))
    if split == "heldout":
        objects = [_heldout_object(rng, positions[0])]
        objects += [_object(rng, c, p) for c, p in zip(colors[1:], positions[1:]) if c != objects[0].color]
        if len(objects) < len(positions):  # the drawn second colour clashed with the held-out one
            spare = [c for c in COLORS if c != objects[0].color]
            objects.append(_object(rng, rng.choice(spare), positions[1]))
    else:
        objects = [_train_object(rng, c, p) for c, p in zip(colors, positions)]
    used = {obj.color for obj in objects}
    background = rng.choice([c for c in COLORS if c not in used])
    return Scene(objects=tuple(objects), background=background)


def _object(rng: random.Random, color: str, position: str) -> SceneObject:
    return SceneObject(color=color, shape=rng.choice(SHAPES), size=rng.choice(list(SIZES)), position=position)


def _train_object(rng: random.Random, color: str, position: str) -> SceneObject:
    allowed = [s for s in SHAPES if not object_is_heldout(SceneObject(color, s, "small", position))]
    return SceneObject(color=color, shape=rng.choice(allowed), size=rng.choice(list(SIZES)), position=position)


def _heldout_object(rng: random.Random, position: str) -> SceneObject:
    """A held-out pair at ``position``, or a held-out triple when one exists there (half the time)."""
    triples = sorted(t for t in HELDOUT_COLOR_SHAPE_POSITIONS if t[2] == position)
    if triples and rng.random() < 0.5:
        color, shape, _ = rng.choice(triples)
    else:
        color, shape = rng.choice(sorted(HELDOUT_COLOR_SHAPES))
    return SceneObject(color=color, shape=shape, size=rng.choice(list(SIZES)), position=position)


def heldout_prompts(count: int = 200, seed: int = 0) -> list[tuple[str, Scene]]:
    """The evaluation set: ``count`` (caption, scene) pairs, about half with two objects."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        scene = sample_scene(rng, split="heldout", two_object_prob=0.5)
        prompts.append((caption(scene, rng), scene))
    return prompts


# --- captions ---------------------------------------------------------------


def caption(scene: Scene, rng: random.Random) -> str:
    """Varied English that states every object's colour, shape and position."""
    if len(scene.objects) == 1:
        text = _single_caption(scene.objects[0], rng)
    else:
        text = _pair_caption(scene.objects[0], scene.objects[1], rng)
    return _with_background(text, scene.background, rng)


def _noun_phrase(obj: SceneObject, rng: random.Random) -> str:
    words = []
    if rng.random() < 0.4:
        words.append(rng.choice(SIZE_WORDS[obj.size]))
    words.append(rng.choice(COLOR_WORDS[obj.color]))
    words.append(rng.choice(SHAPE_WORDS[obj.shape]))
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def _single_caption(obj: SceneObject, rng: random.Random) -> str:
    noun = _noun_phrase(obj, rng)
    where = rng.choice(POSITION_PHRASES[obj.position])
    template = rng.choice(("{n} {w}", "{n} {w}", "there is {n} {w}", "a picture of {n} {w}", "{n} drawn {w}"))
    return template.format(n=noun, w=where)


def _pair_caption(first: SceneObject, second: SceneObject, rng: random.Random) -> str:
    a, b = _noun_phrase(first, rng), _noun_phrase(second, rng)
    pa, pb = first.position, second.position
    relation = {
        ("left", "right"): "to the left of",
        ("right", "left"): "to the right of",
        ("top", "bottom"): "above",
        ("bottom", "top"): "below",
    }.get((pa, pb))
    if relation is not None and rng.random() < 0.5:
        return f"{a} {relation} {b}"
    wa, wb = rng.choice(POSITION_PHRASES[pa]), rng.choice(POSITION_PHRASES[pb])
    return f"{a} {wa} and {b} {wb}"


def _with_background(text: str, background: str, rng: random.Random) -> str:
    if rng.random() < 0.4:
        return text
    color = rng.choice(COLOR_WORDS[background])
    template = rng.choice(
        ("{t} on a {c} background", "{t}, {c} background", "{t} against a {c} background", "{t} on {c}")
    )
    return template.format(t=text, c=color)


# --- rendering --------------------------------------------------------------


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as an RGB image, drawn at 4x and box-filtered down (anti-aliased, deterministic)."""
    big = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), COLORS[scene.background])
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        cx, cy = POSITIONS[obj.position]
        radius = SIZES[obj.size] * big
        _draw_shape(draw, obj.shape, cx * big, cy * big, radius, COLORS[obj.color], COLORS[scene.background])
    return canvas.resize((size, size), Image.Resampling.BOX)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, background) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        inner = r * 0.52
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=background)
    else:
        draw.polygon([(cx + x * r, cy + y * r) for x, y in _unit_outline(shape)], fill=fill)


@cache
def _unit_outline(shape: str) -> tuple[tuple[float, float], ...]:
    """The shape's polygon, y pointing down, its bounding box centred on the origin, extent <= 1."""
    if shape == "square":
        points = [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]
    elif shape == "diamond":
        points = [(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]
    elif shape == "triangle":
        points = [(0.0, -1.0), (1.0, 0.75), (-1.0, 0.75)]
    elif shape == "star":
        # Five points; an inner radius of 0.45 keeps them thick enough to survive 64 px.
        radii = [1.0 if k % 2 == 0 else 0.45 for k in range(10)]
        points = [(math.sin(k * math.pi / 5) * r, -math.cos(k * math.pi / 5) * r) for k, r in enumerate(radii)]
    elif shape == "heart":
        ts = [2 * math.pi * i / 120 for i in range(120)]
        points = [
            (16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)))
            for t in ts
        ]
    elif shape == "cross":
        w = 0.34
        points = [
            (-w, -1.0), (w, -1.0), (w, -w), (1.0, -w), (1.0, w), (w, w),
            (w, 1.0), (-w, 1.0), (-w, w), (-1.0, w), (-1.0, -w), (-w, -w),
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return _centred(points)


def _centred(points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    scale = max(max(xs) - min(xs), max(ys) - min(ys)) / 2
    scale = scale if scale > 1.0 else 1.0
    return tuple(((x - mx) / scale, (y - my) / scale) for x, y in points)
