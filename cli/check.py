"""``python -m cli.check FAMILY PATH``: load a model directory offline, as the server would, and describe it.

``easel pull`` runs it in a separate process (see :mod:`cli.pull`); it
prints one line about the loaded model, or fails with the loader's message.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("family")
    parser.add_argument("path")
    parser.add_argument("--presets")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    args = parser.parse_args(argv)
    from pipelines.loader import load_backend  # offline: importing pipelines sets HF_HUB_OFFLINE

    try:
        backend = load_backend(
            "check", args.family, args.path, presets=args.presets, device=args.device, dtype=args.dtype
        )
    except Exception as error:  # reported as one line to the parent, which names the directory
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    info = backend.info
    parameters = sum(info.parameter_counts.values())
    width, height = info.native_size_for(1, 1)
    print(
        f"loads: {info.family}, {parameters / 1e6:.2f} M parameters, native {width}x{height}, "
        f"tasks {', '.join(sorted(info.tasks))}, on {info.device} ({info.dtype})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
