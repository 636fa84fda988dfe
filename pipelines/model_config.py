"""``easel.json``: what a model directory says about itself beyond diffusers' own files.

It sits next to ``model_index.json``. Every key is optional:

``native_size``
    The resolution the model was trained at: an int (a square side, e.g. ``64``)
    or ``[width, height]``. Its area becomes ``ModelInfo.native_area``; other
    aspect ratios keep that area. Without it a Kandinsky backend reads the size
    its own configs declare: the decoder UNet's ``sample_size`` (in latent
    pixels) times the MoVQ's scale factor, 64 x 8 = 512 for the real Kandinsky
    2.2; 512x512 when the UNet declares none. A Karlo backend always reads its
    output size from the super-resolution UNet's config and ignores this key.
``min_side`` / ``max_side``
    Bounds, in output pixels, for free ``WxH`` requests (defaults 64 and 2048).
``created``
    Unix time the weights were written (for ``/v1/models``); defaults to the
    modification time of ``model_index.json``.
``license``
    The weights' licence as the hub names it (``apache-2.0``,
    ``creativeml-openrail-m``); ``easel pull`` copies it from the model card.
    Shown by ``/v1/models`` and ``easel models``.

Other keys (e.g. training notes written by ``pipelines.training``) are allowed
and not read by the backends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("kandinsky22", "karlo")  # the backend families pipelines.loader knows
EASEL_CONFIG_NAME = "easel.json"
DEFAULT_MIN_SIDE = 64
DEFAULT_MAX_SIDE = 2048
KANDINSKY_DEFAULT_SIDE = 512  # the real Kandinsky 2.2's, for a decoder UNet that declares no sample_size


@dataclass(frozen=True)
class EaselConfig:
    native_size: tuple[int, int] | None
    min_side: int
    max_side: int
    created: int
    license: str | None = None


def _parse_native_size(value: object, source: Path) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return value[0], value[1]
    raise ValueError(f"{source}: native_size must be a positive int or [width, height], got {value!r}")


def read_easel_config(model_dir: Path) -> EaselConfig:
    """The directory's ``easel.json`` merged over the defaults (all defaults if the file is absent)."""
    path = model_dir / EASEL_CONFIG_NAME
    data = json.loads(path.read_text()) if path.is_file() else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    index = model_dir / "model_index.json"
    created_default = int(index.stat().st_mtime) if index.is_file() else 0
    return EaselConfig(
        native_size=_parse_native_size(data.get("native_size"), path),
        min_side=int(data.get("min_side", DEFAULT_MIN_SIDE)),
        max_side=int(data.get("max_side", DEFAULT_MAX_SIDE)),
        created=int(data.get("created", created_default)),
        license=str(data["license"]) if data.get("license") else None,
    )


def kandinsky_native_size(config: EaselConfig, unet_sample_size: object, movq_blocks: int) -> tuple[int, int]:
    """A Kandinsky model's native (width, height): ``easel.json``'s, else what its decoder UNet's config declares.

    ``unet_sample_size`` is the UNet config's ``sample_size`` (latent pixels: an int, or [height, width], or None);
    ``movq_blocks`` the MoVQ's number of blocks, which sets its scale factor 2 ** (blocks - 1) as in diffusers.
    """
    if config.native_size is not None:
        return config.native_size
    scale = 2 ** (movq_blocks - 1)
    sides = [unet_sample_size] * 2 if _positive_int(unet_sample_size) else unet_sample_size
    if isinstance(sides, (list, tuple)) and len(sides) == 2 and all(_positive_int(side) for side in sides):
        height, width = sides
        return width * scale, height * scale
    return KANDINSKY_DEFAULT_SIDE, KANDINSKY_DEFAULT_SIDE


def read_kandinsky_native_size(model_dir: Path) -> tuple[int, int]:
    """:func:`kandinsky_native_size` from the folder's files alone (for ``easel models``: nothing loaded)."""
    config = read_easel_config(model_dir)
    try:
        unet = json.loads((model_dir / "unet" / "config.json").read_text())
        movq = json.loads((model_dir / "movq" / "config.json").read_text())
        return kandinsky_native_size(config, unet.get("sample_size"), len(movq["block_out_channels"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a damaged folder: the loader names it
        return kandinsky_native_size(config, None, 1)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
