"""Score an image against the scene its prompt describes, from its pixels alone.

The image is brought to 64x64. The background colour is the median of the
border; foreground pixels are those closer to some other palette colour than
to the background. Foreground splits into objects by connectivity (and by
colour when two colours share one blob). Each object gets

- a colour: the nearest palette colour to the median of its interior pixels;
- a shape: the nearest template, comparing soft masks normalised to the
  bounding box (plus the box's aspect ratio), templates being renders of every
  shape at both sizes, sharp and blurred;
- a position: the :data:`POSITIONS` entry nearest its bounding-box centre.

Noise is not a scene: an image that is not mostly plain background has no
objects, and a blob counts only if it is mostly one colour and shaped roughly
like some template.

Each object of the scene is matched to the detected object nearest in
position and colour, and judged attribute by attribute. numpy and PIL only.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from .scenes import COLORS, POSITIONS, SHAPES, SIZES, Scene, SceneObject, render

ANALYSIS_SIDE = 64
MIN_OBJECT_AREA = 16  # pixels at 64x64; the smallest rendered shape (small star) covers 153
MIN_BACKGROUND_DISTANCE = 40.0  # RGB distance; palette colours are >= 100 apart
# What separates a scene from noise (measured on blurred, noisy renders against
# random-weight model outputs and random noise): a scene is mostly plain
# background (two large objects cover under 30 %), and its objects are
# single-coloured and shaped like one of the templates.
PLAIN_DISTANCE = 60.0
MIN_PLAIN_SHARE = 0.5
MAX_TEMPLATE_DISTANCE = 0.6
MIN_COLOR_PURITY = 0.35
TEMPLATE_SIDE = 24
ASPECT_WEIGHT = 0.5
TEMPLATE_BLURS = (0.0, 0.8, 1.4, 2.0)  # Gaussian radii, in pixels at 64x64
BORDER = 2
REACH = 3  # pixels beyond the blob that still count toward its soft mask (blurred rims)

_PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[name] for name in _PALETTE_NAMES], dtype=np.float32)
_MAX_RGB_DISTANCE = float(np.sqrt(3) * 255)


@dataclass
class ObjectScore:
    color: bool
    shape: bool
    position: bool

    @property
    def correct(self) -> bool:
        return self.color and self.shape and self.position


@dataclass
class ImageScore:
    objects: list[ObjectScore]
    all_correct: bool


@dataclass
class DetectedObject:
    """One blob of foreground, classified."""

    color: str
    shape: str
    position: str
    center: tuple[float, float]  # bounding-box centre, fractions of the side
    rgb: tuple[float, float, float]
    area: int
    fit: float  # distance to the nearest shape template: 0 is a perfect match
    purity: float  # share of the interior whose nearest palette colour is the object's colour


# --- scoring ----------------------------------------------------------------


def score_image(image: Image.Image, scene: Scene) -> ImageScore:
    """Judge colour, shape and position of every object ``scene`` asks for."""
    detected = detect_objects(image)
    matches = _match(scene.objects, detected)
    scores = [
        ObjectScore(False, False, False)
        if found is None
        else ObjectScore(found.color == obj.color, found.shape == obj.shape, found.position == obj.position)
        for obj, found in zip(scene.objects, matches)
    ]
    return ImageScore(objects=scores, all_correct=all(s.correct for s in scores))


def summarize(scores: list[ImageScore], scenes: list[Scene]) -> dict:
    """Accuracies over objects (colour, shape, position) and over prompts (all correct), with counts."""
    if len(scores) != len(scenes):
        raise ValueError(f"{len(scores)} scores for {len(scenes)} scenes")
    objects = [o for s in scores for o in s.objects]
    singles = [s for s, scene in zip(scores, scenes) if len(scene.objects) == 1]
    pairs = [s for s, scene in zip(scores, scenes) if len(scene.objects) == 2]

    def rate(values: list[bool]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "color": rate([o.color for o in objects]),
        "shape": rate([o.shape for o in objects]),
        "position": rate([o.position for o in objects]),
        "object_correct": rate([o.correct for o in objects]),
        "all_correct": rate([s.all_correct for s in scores]),
        "single_correct": rate([s.all_correct for s in singles]),
        "both_correct": rate([s.all_correct for s in pairs]),
        "prompts": len(scores),
        "objects": len(objects),
        "single_object_prompts": len(singles),
        "two_object_prompts": len(pairs),
    }


def _match(wanted: tuple[SceneObject, ...], detected: list[DetectedObject]) -> list[DetectedObject | None]:
    """The assignment of distinct detected objects that is cheapest in position + colour distance."""

    def cost(obj: SceneObject, found: DetectedObject) -> float:
        (x, y), (ex, ey) = found.center, POSITIONS[obj.position]
        colour = np.linalg.norm(np.array(found.rgb) - np.array(COLORS[obj.color])) / _MAX_RGB_DISTANCE
        return float(np.hypot(x - ex, y - ey) + colour)

    slots = list(range(len(detected))) + [None] * len(wanted)
    best: tuple[float, tuple] | None = None
    for choice in itertools.permutations(slots, len(wanted)):
        if any(c is not None and choice.count(c) > 1 for c in choice):
            continue
        total = sum(1e3 if j is None else cost(obj, detected[j]) for obj, j in zip(wanted, choice))
        if best is None or total < best[0]:
            best = (total, choice)
    assert best is not None
    return [None if j is None else detected[j] for j in best[1]]


# --- detection --------------------------------------------------------------


def detect_objects(image: Image.Image) -> list[DetectedObject]:
    """Every foreground blob of at least :data:`MIN_OBJECT_AREA` pixels, classified."""
    pixels = _pixels(image)
    background = _background(pixels)
    foreground = _foreground(pixels, background)
    if _plain_share(pixels, background) < MIN_PLAIN_SHARE:
        return []  # no plain background: noise or texture, not a scene of shapes
    parts = [part for blob in _components(foreground) for part in _split_by_colour(blob, pixels)]
    parts = [part for part in parts if part.sum() >= MIN_OBJECT_AREA]
    claimed = np.any(parts, axis=0) if parts else foreground
    found = [_classify(part, claimed & ~part, pixels, background) for part in parts]
    return [obj for obj in found if obj.fit <= MAX_TEMPLATE_DISTANCE and obj.purity >= MIN_COLOR_PURITY]


def _pixels(image: Image.Image) -> np.ndarray:
    image = image.convert("RGB")
    if image.size != (ANALYSIS_SIDE, ANALYSIS_SIDE):
        image = image.resize((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def _background(pixels: np.ndarray) -> np.ndarray:
    border = np.concatenate(
        [
            pixels[:BORDER].reshape(-1, 3),
            pixels[-BORDER:].reshape(-1, 3),
            pixels[BORDER:-BORDER, :BORDER].reshape(-1, 3),
            pixels[BORDER:-BORDER, -BORDER:].reshape(-1, 3),
        ]
    )
    return np.median(border, axis=0)


def _plain_share(pixels: np.ndarray, background: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(pixels - background, axis=-1) < PLAIN_DISTANCE))


def _foreground(pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Pixels nearer some non-background palette colour than the background, and clearly off it."""
    to_background = np.linalg.norm(pixels - background, axis=-1)
    others = np.delete(_PALETTE, _nearest_palette_index(background), axis=0)
    to_others = np.linalg.norm(pixels[:, :, None, :] - others, axis=-1).min(axis=-1)
    return (to_others < to_background) & (to_background > MIN_BACKGROUND_DISTANCE)


def _nearest_palette_index(rgb: np.ndarray) -> int:
    return int(np.argmin(np.linalg.norm(_PALETTE - rgb, axis=-1)))


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of ``mask``, each as a boolean mask."""
    height, width = mask.shape
    seen = np.zeros_like(mask)
    found = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        component = np.zeros_like(mask)
        queue = deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            component[y, x] = True
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        found.append(component)
    return found


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return mask | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]


def _interior(mask: np.ndarray) -> np.ndarray:
    """The mask without its anti-aliased rim, unless that leaves too little."""
    inner = _erode(mask)
    return inner if inner.sum() >= 4 else mask


def _split_by_colour(blob: np.ndarray, pixels: np.ndarray) -> list[np.ndarray]:
    """Two touching objects of different colours come apart; one object stays whole."""
    inner = _interior(blob)
    labels = np.linalg.norm(pixels[inner][:, None, :] - _PALETTE, axis=-1).argmin(axis=-1)
    counts = np.bincount(labels, minlength=len(_PALETTE))
    first, second = np.argsort(counts)[::-1][:2]
    if counts[second] < max(MIN_OBJECT_AREA, 0.2 * inner.sum()):
        return [blob]
    two = _PALETTE[[first, second]]
    nearer_first = np.linalg.norm(pixels[:, :, None, :] - two, axis=-1).argmin(axis=-1) == 0
    return _components(blob & nearer_first) + _components(blob & ~nearer_first)


def _classify(mask: np.ndarray, others: np.ndarray, pixels: np.ndarray, background: np.ndarray) -> DetectedObject:
    inner = pixels[_interior(mask)]
    rgb = np.median(inner, axis=0)
    color = _nearest_palette_index(rgb)
    purity = float(np.mean(np.linalg.norm(inner[:, None, :] - _PALETTE, axis=-1).argmin(axis=-1) == color))
    crop, aspect, (x0, y0, x1, y1) = _shape_features(mask, others, pixels, background, rgb)
    center = ((x0 + x1) / 2 / ANALYSIS_SIDE, (y0 + y1) / 2 / ANALYSIS_SIDE)
    shape, fit = _nearest_shape(crop, aspect)
    return DetectedObject(
        color=_PALETTE_NAMES[color],
        shape=shape,
        position=min(POSITIONS, key=lambda p: np.hypot(center[0] - POSITIONS[p][0], center[1] - POSITIONS[p][1])),
        center=center,
        rgb=tuple(float(v) for v in rgb),
        area=int(mask.sum()),
        fit=fit,
        purity=purity,
    )


def _shape_features(
    mask: np.ndarray, others: np.ndarray, pixels: np.ndarray, background: np.ndarray, rgb: np.ndarray
) -> tuple[np.ndarray, float, tuple[int, int, int, int]]:
    """The soft mask cropped to the object's box and resampled square, the box's aspect ratio, the box.

    The box is where the soft mask reaches one half, not the foreground blob:
    where the blob ends depends on which palette colours the blurred rim passes
    near, the half-way line does not.
    """
    near = mask
    for _ in range(REACH):
        near = _dilate(near)
    alpha = _alpha(pixels, background, rgb) * (near & ~others)
    ys, xs = np.nonzero(alpha >= 0.5)
    if len(xs) == 0:
        ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    x0, y0, x1, y1 = box
    crop = Image.fromarray(alpha[y0:y1, x0:x1].astype(np.float32), mode="F")
    square = np.asarray(crop.resize((TEMPLATE_SIDE, TEMPLATE_SIDE), Image.Resampling.BILINEAR))
    return square, (x1 - x0) / (y1 - y0), box


def _alpha(pixels: np.ndarray, background: np.ndarray, color: np.ndarray) -> np.ndarray:
    """How much of ``color`` each pixel holds, blending from ``background``: a soft mask in [0, 1]."""
    direction = color - background
    span = float(direction @ direction)
    if span == 0.0:
        return np.zeros(pixels.shape[:2], dtype=np.float32)
    return np.clip((pixels - background) @ direction / span, 0.0, 1.0).astype(np.float32)


def _nearest_shape(crop: np.ndarray, aspect: float) -> tuple[str, float]:
    def distance(template: tuple[np.ndarray, float]) -> float:
        mask, template_aspect = template
        overlap = np.minimum(crop, mask).sum() / max(np.maximum(crop, mask).sum(), 1e-6)
        return float(1.0 - overlap + ASPECT_WEIGHT * abs(np.log(aspect / template_aspect)))

    return min(((shape, distance(template)) for shape, template in _templates()), key=lambda item: item[1])


@lru_cache(maxsize=1)
def _templates() -> tuple[tuple[str, tuple[np.ndarray, float]], ...]:
    """Every shape at every size and blur, rendered and measured the way real images are.

    Blurred templates keep soft generated shapes (a star whose points have
    melted) nearest their own kind rather than the circle.
    """
    templates = []
    for shape, size, blur in itertools.product(SHAPES, SIZES, TEMPLATE_BLURS):
        scene = Scene(objects=(SceneObject("black", shape, size, "center"),), background="white")
        image = render(scene, ANALYSIS_SIDE)
        if blur:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        pixels = _pixels(image)
        background = _background(pixels)
        (mask,) = _components(_foreground(pixels, background))
        rgb = np.median(pixels[_interior(mask)], axis=0)
        crop, aspect, _ = _shape_features(mask, np.zeros_like(mask), pixels, background, rgb)
        templates.append((shape, (crop, aspect)))
    return tuple(templates)
