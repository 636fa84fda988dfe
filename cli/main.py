"""``easel``: dispatch to a subcommand; with none, serve (as ``easel`` always has).

Every subcommand module has ``run(argv) -> int``; it is imported only when
chosen. ``train``, ``eval`` and ``bench`` hand their arguments to the lab and
benchmark scripts untouched.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module under cli/, one-line summary for `easel --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "run the OpenAI-compatible API server (the default when no command is given)"),
    "generate": ("images", "make images from a prompt, here or on a running server"),
    "edit": ("images", "edit an image as a prompt says (all of it, or a masked part)"),
    "vary": ("images", "make variations of an image"),
    "batch": ("batch", "submit, follow, download, list and cancel image batches on a running server"),
    "models": ("models", "list local models: family, size on disk, parameters, native size, origin"),
    "pull": ("pull", "download a known model from the Hugging Face hub and register it"),
    "train": ("lab", "train the embedded model (python -m pipelines.lab.training.train)"),
    "eval": ("lab", "evaluate a model on held-out prompts (python -m pipelines.lab.evaluate)"),
    "bench": ("lab", "run a benchmark script from benchmarks/ (mini or server)"),
}


def top_level_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="easel",
        description="Self-hosted, OpenAI-compatible image API on prior+decoder diffusion models.",
        epilog="With no command, easel serves: `easel --port 9000` is `easel serve --port 9000`. "
        "`easel COMMAND --help` shows a command's options.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    raise SystemExit(dispatch(list(sys.argv[1:] if argv is None else argv)))


def dispatch(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        top_level_parser().print_help()
        return 0
    if argv[:1] == ["--version"]:
        argv = ["serve", "--version"]
    if not argv or argv[0] not in COMMANDS:
        argv = ["serve", *argv]  # bare `easel [serve options]` keeps serving
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"cli.{COMMANDS[name][0]}")
    return int(module.run(name, rest))
