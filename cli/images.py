"""``easel generate``, ``easel edit``, ``easel vary``: images from the terminal, written to files.

By default the model runs in this process (:mod:`cli.local`), with a
progress bar per stage. With ``--server URL`` the request goes to a running
Easel instead (:mod:`cli.remote`), streaming partial images where the API
streams. Either way the fields mean what they mean in the API (docs/api.md), each
file is named after its seed, and a seed is chosen here when none is given so
that every picture can be made again.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from pipelines.tasks import Task
from server.settings.options import OneLineParser

from .image_request import CommandError, Request

RANDOM_SEED_RANGE = 2**31
SLUG_WORDS = 6


def build_parser(name: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=f"easel {name}", description=_DESCRIPTIONS[name])
    if name == "edit":
        parser.add_argument("image", type=Path, help="the picture to edit (PNG, JPEG or WebP)")
        parser.add_argument(
            "--mask",
            type=Path,
            help="PNG whose fully transparent pixels mark the area to repaint; without one, the whole image is edited",
        )
    if name in ("generate", "edit"):
        parser.add_argument("prompt", help="what to draw")
    if name == "vary":
        parser.add_argument("image", type=Path, help="the picture to vary (PNG, JPEG or WebP)")
    parser.add_argument(
        "--model", help="a model or alias name (default: the default model); locally also NAME=FAMILY:PATH"
    )
    parser.add_argument("--n", type=int, help="how many images (1-10, default 1)")
    parser.add_argument("--size", help="WxH, e.g. 512x512 (default 1024x1024; edits and `auto`: the input's size)")
    parser.add_argument("--quality", help="low, medium, high (or OpenAI's names)")
    parser.add_argument("--seed", type=int, help="image i uses seed + i (default: a random seed, printed)")
    parser.add_argument("--output-format", choices=("png", "jpeg", "webp"), default="png")
    if name in ("generate", "edit"):
        parser.add_argument("--negative-prompt", help="what to steer away from")
        parser.add_argument("--prior-steps", type=int)
        parser.add_argument("--prior-guidance-scale", type=float)
    if name == "generate":
        parser.add_argument("--style", choices=("vivid", "natural"))
    parser.add_argument("--decoder-steps", type=int)
    parser.add_argument("--decoder-guidance-scale", type=float)
    parser.add_argument("--decoder-guidance-min-timestep", type=int)
    parser.add_argument("--decoder-step-cache", type=int, help="recompute the decoder's deep blocks every N steps")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the files (default: here)")
    remote = parser.add_argument_group("on a running server")
    remote.add_argument("--server", metavar="URL", help="send the request to this Easel (e.g. http://127.0.0.1:8000)")
    remote.add_argument("--api-key", default=os.environ.get("EASEL_API_KEY"), help="bearer key (env EASEL_API_KEY)")
    if name != "vary":  # the API streams generations and edits, not variations
        remote.add_argument("--partial-images", type=int, help="previews to stream, 0-3 (default 2)")
    local = parser.add_argument_group("in this process")
    local.add_argument("--config", metavar="FILE", help="settings file (as easel serve)")
    local.add_argument("--device", help="torch device (default: cuda, else mps, else cpu)")
    local.add_argument("--dtype", help="torch dtype (default: the device's)")
    return parser


_DESCRIPTIONS = {
    "generate": "Make images from a prompt and write them to files.",
    "edit": "Edit an image as the prompt says (the whole image, or a masked area: OpenAI's mask semantics) and "
    "write the results to files.",
    "vary": "Make variations of an image (no prompt: they start from the image's own embedding).",
}
_TASKS = {"generate": Task.GENERATE, "edit": Task.EDIT, "vary": Task.VARIATION}
_FIELDS = (
    "n", "size", "quality", "output_format", "negative_prompt", "prior_steps", "prior_guidance_scale", "style",
    "decoder_steps", "decoder_guidance_scale", "decoder_guidance_min_timestep", "decoder_step_cache",
)  # fmt: skip


LOCAL_ONLY = ("config", "device", "dtype")
REMOTE_ONLY = ("partial_images",)  # --api-key has an environment default, so it is not checked


def run(name: str, argv: list[str]) -> int:
    parser = build_parser(name)
    args = parser.parse_args(argv)
    misplaced = [key for key in (LOCAL_ONLY if args.server else REMOTE_ONLY) if getattr(args, key, None) is not None]
    if misplaced:
        where = "runs here, not with --server" if args.server else "needs --server"
        parser.error(f"--{misplaced[0].replace('_', '-')} {where}")
    try:
        request = _request(name, args)
        if args.server:
            from .remote import run_remote

            partial_images = getattr(args, "partial_images", None)
            files = run_remote(request, args.server, args.api_key, 2 if partial_images is None else partial_images)
        else:
            from .local import run_local

            files = run_local(request, args)
        for path, seed in _save(files, request, args):
            print(f"{path}  seed {seed}")
    except CommandError as error:
        flag = f" ({_flag(error.param)})" if error.param else ""
        print(f"easel {name}: error: {error}{flag}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"easel {name}: interrupted", file=sys.stderr)
        return 130
    return 0


def _request(name: str, args: argparse.Namespace) -> Request:
    fields: dict[str, Any] = {key: getattr(args, key) for key in _FIELDS if getattr(args, key, None) is not None}
    fields["seed"] = args.seed if args.seed is not None else secrets.randbelow(RANDOM_SEED_RANGE)
    if args.model:
        fields["model"] = args.model
    if name in ("generate", "edit"):
        fields["prompt"] = args.prompt
    image = _read(args.image, "image") if name in ("edit", "vary") else None
    mask = _read(args.mask, "mask") if name == "edit" and args.mask is not None else None
    return Request(_TASKS[name], fields, image, mask)


def _read(path: Path, param: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}", param) from None


def _save(files: list[bytes], request: Request, args: argparse.Namespace) -> list[tuple[Path, int]]:
    args.out.mkdir(parents=True, exist_ok=True)
    if request.task == Task.GENERATE:
        stem = "-".join(re.findall(r"[a-z0-9]+", str(request.fields["prompt"]).lower())[:SLUG_WORDS]) or "image"
    else:
        stem = f"{args.image.stem}-{request.task}"
    saved = []
    for index, data in enumerate(files):
        seed = request.seed + index
        path = args.out / f"{stem}-{seed}.{args.output_format}"
        path.write_bytes(data)
        saved.append((path, seed))
    return saved


def _flag(param: str | None) -> str:
    """The command-line flag for an API field (``prior_steps`` -> ``--prior-steps``)."""
    if param in ("prompt", "image"):
        return param
    return "--" + str(param).replace("_", "-")
