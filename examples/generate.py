"""Generate one image with the official openai SDK against an Easel server and save it.

    python examples/generate.py "a large red heart on the left and a blue star on the right" --out hearts.png

The default model, easel-mini, knows one small world: one or two coloured
shapes (circle, square, triangle, star, heart, ring, diamond, cross) at a
position (left, right, top, bottom, centre, corners) on a plain background.

EASEL_BASE_URL (default http://127.0.0.1:8000/v1) says where the server is;
EASEL_API_KEY is sent as the bearer key (any value works when the server has
no keys configured). Prints the saved path, the image size and its seed.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
from pathlib import Path

from openai import OpenAI
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--model", default=None, help="model or alias (default: the server's default model)")
    parser.add_argument("--size", default="1024x1024", help="e.g. 1024x1024, 1792x1024, auto, or WxH")
    parser.add_argument(
        "--quality", default="auto", choices=["low", "medium", "high", "xhigh", "max", "standard", "hd", "auto"]
    )
    parser.add_argument("--format", default="png", choices=["png", "jpeg", "webp", "gif", "svg"], dest="output_format")
    parser.add_argument("--seed", type=int, default=None, help="Easel extension: same seed, same image")
    parser.add_argument("--out", type=Path, default=None, help="output file (default: easel-<seed>.<format>)")
    args = parser.parse_args()

    client = OpenAI(
        base_url=os.environ.get("EASEL_BASE_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("EASEL_API_KEY", "none"),
    )
    kwargs = {"model": args.model} if args.model else {}
    result = client.images.generate(
        prompt=args.prompt,
        size=args.size,
        quality=args.quality,
        output_format=args.output_format,
        response_format="b64_json",
        extra_body={"seed": args.seed} if args.seed is not None else None,
        **kwargs,
    )
    item = result.data[0]
    seed = (item.model_extra or {}).get("seed")
    data = base64.b64decode(item.b64_json)
    out = args.out or Path(f"easel-{seed}.{args.output_format}")
    out.write_bytes(data)
    width, height = Image.open(io.BytesIO(data)).size
    print(f"{out} {width}x{height} seed={seed}")


if __name__ == "__main__":
    main()
