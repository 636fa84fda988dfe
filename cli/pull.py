"""``easel pull NAME``: download a known model, assemble the directory the backends load, check it, register it.

The only code path in Easel that goes online. Model code puts the hub in
offline mode when it is imported (``pipelines/__init__.py`` sets
``HF_HUB_OFFLINE=1``), and ``huggingface_hub`` reads that variable once, at
its own import. So this command keeps the two apart: it imports neither
``pipelines`` nor ``server`` (the layout test checks it), imports
``huggingface_hub`` only after checking the environment, and checks that
the assembled model loads in a separate process (:mod:`cli.check`), which
runs offline like the server and gives the model's memory back when done.

Steps: list each repository's files at its current commit, download the
ones the recipe needs into ``$EASEL_HOME/downloads`` (resumable, checked
against the hub's checksums), link them into
``$EASEL_HOME/models/.NAME.partial`` in the backends' layout, load it, then
move it to ``$EASEL_HOME/models/NAME`` and add it to
``$EASEL_HOME/registry.json``, where ``easel serve`` finds it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from weights.registry import easel_home, register_user_model

from . import recipes
from .recipes import INDEX, RECIPES, Recipe

INTERRUPTED_EXIT_CODE = 130
EASEL_CONFIG = "easel.json"  # pipelines.model_config's file; kept from a repository that has one


def build_parser() -> argparse.ArgumentParser:
    known = "\n".join(f"  {name:<22} {recipe.description}" for name, recipe in RECIPES.items())
    parser = argparse.ArgumentParser(
        prog="easel pull",
        description="Download a known model from the Hugging Face hub into $EASEL_HOME and register it.",
        epilog=f"known models:\n{known}\n\nHF_ENDPOINT names a hub mirror; HF_TOKEN a token.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(RECIPES), metavar="NAME", help="one of the known models below")
    parser.add_argument("--as", dest="register_as", metavar="NAME", help="register under another name")
    parser.add_argument("--revision", default="main", help="hub revision of every repository (default main)")
    parser.add_argument("--no-check", action="store_true", help="skip loading the model to check it")
    parser.add_argument("--keep-downloads", action="store_true", help="keep $EASEL_HOME/downloads afterwards")
    return parser


def run(name: str, argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if "pipelines" in sys.modules:  # see the module docstring: the hub would already be offline
        raise RuntimeError("easel pull must run before model code is imported")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        print("easel pull: error: HF_HUB_OFFLINE is set: unset it to let `easel pull` download", file=sys.stderr)
        return 1
    from .hub import HubError

    recipe = RECIPES[args.name]
    try:
        path = pull(recipe, args.register_as or recipe.name, args)
    except HubError as error:
        print(f"easel pull: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\neasel pull: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    print(f"{args.register_as or recipe.name}: ready in {path}. `easel serve` serves it (`easel models` lists it).")
    return 0


def pull(recipe: Recipe, name: str, args: argparse.Namespace) -> Path:
    from . import hub

    home = easel_home()
    downloads = home / "downloads"
    easel_config: dict = {}
    with hub.client() as http:
        plans = []
        for part in recipe.parts:
            commit, files = hub.repo_files(part.repo, args.revision)
            if INDEX not in files:
                raise hub.HubError(f"{part.repo}@{commit[:7]} has no {INDEX}: not a diffusers pipeline")
            index = json.loads(hub.download(http, files[INDEX], _repo_dir(downloads, part.repo)).read_text())
            if part is recipe.parts[0] and EASEL_CONFIG in files:  # a repository made for Easel declares its sizes
                easel_config = json.loads(
                    hub.download(http, files[EASEL_CONFIG], _repo_dir(downloads, part.repo)).read_text()
                )
            folders = recipes.part_folders(part, index)
            names = recipes.select_files(sorted(files), folders)
            plans.append((part, commit, index, [files[file] for file in names]))
        todo = [file for _, _, _, chosen in plans for file in chosen]
        total = sum(file.size for file in todo)
        repos = ", ".join(f"{part.repo}@{commit[:7]}" for part, commit, _, _ in plans)
        _say(f"{name}: {len(todo)} files, {total / 1e9:.2f} GB from {repos} ({hub.endpoint()})")
        for number, file in enumerate(todo, 1):
            _say(f"[{number}/{len(todo)}] {file.repo}: {file.name} ({file.size / 1e6:.1f} MB)")
            hub.download(http, file, _repo_dir(downloads, file.repo))
    _say(f"all {len(todo)} files match the hub's checksums")
    staging = _assemble(recipe, name, plans, home, downloads, {**easel_config, "source": _source(recipe, repos)})
    if not args.no_check:
        _check_loads(recipe, staging)
    target = home / "models" / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    org = recipe.parts[0].repo.split("/")[0]
    entry = {"backend": recipe.family, "path": f"models/{name}", "presets": recipe.presets, "owned_by": org}
    register_user_model(home, name, {**entry, "source": f"pulled from {repos}"})
    if not args.keep_downloads:
        for part, _, _, _ in plans:
            shutil.rmtree(_repo_dir(downloads, part.repo), ignore_errors=True)
    return target


def _repo_dir(downloads: Path, repo: str) -> Path:
    return downloads / repo.replace("/", "--")


def _source(recipe: Recipe, repos: str) -> dict:
    return {"pulled_from": repos, "pulled_at": int(time.time()), "recipe": recipe.name}


def _assemble(recipe: Recipe, name: str, plans: list, home: Path, downloads: Path, easel_config: dict) -> Path:
    """The model directory in the backends' layout, under a temporary name, from the downloaded files."""
    staging = home / "models" / f".{name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for part, _, _, chosen in plans:
        for file in chosen:
            folder, _, rest = file.name.partition("/")
            recipes.place(_repo_dir(downloads, part.repo) / file.name, staging / (part.prefix + folder) / rest)
    recipes.write_json(staging / INDEX, recipes.assembled_index(recipe, [index for _, _, index, _ in plans]))
    recipes.write_json(staging / EASEL_CONFIG, easel_config)
    _say(f"assembled {staging}")
    return staging


def _check_loads(recipe: Recipe, directory: Path) -> None:
    """Load the model in a separate, offline process, as the server would."""
    from .hub import HubError

    _say("checking that it loads (a separate process, offline; --no-check skips this) ...")
    command = [sys.executable, "-m", "cli.check", recipe.family, str(directory), "--presets", recipe.presets]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        _say(done.stdout.strip())
        return
    # The downloads stay (they are removed only after success), so running the command again is quick.
    shutil.rmtree(directory, ignore_errors=True)
    again = "run the same command again to retry it, or add --no-check to skip it"
    if done.returncode < 0:  # killed, most often by the kernel for want of memory
        raise HubError(f"the load check was killed by {_signal_name(-done.returncode)} (out of memory?); {again}")
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise HubError(f"the assembled model did not load: {last}; {again}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
