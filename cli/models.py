"""``easel models``: the local models ``easel serve`` would serve, read from disk without loading them.

The licence, parameter count and stored dtypes come from the directory
(:mod:`server.serving.model_facts`: ``easel.json`` and the weight files'
headers, safetensors and ``.bin`` alike, no weights read); the native size
from the directory's ``easel.json`` or what the model's own configs declare.
"""

from __future__ import annotations

import argparse
import json
import sys

from server.serving.model_facts import model_facts
from server.settings.loading import read_settings
from server.settings.model_specs import ModelSpec
from server.settings.options import ConfigError


def run(name: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="easel models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", metavar="FILE", help="settings file (as easel serve)")
    parser.add_argument("--json", action="store_true", help="one JSON object per model instead of a table")
    args = parser.parse_args(argv)
    try:
        settings = read_settings([f"--config={args.config}"] if args.config else [])
    except ConfigError as error:
        print(f"easel models: error: {error}", file=sys.stderr)
        return 2
    rows = [describe(spec) for spec in settings.models]
    for row in rows:
        row["default"] = row["name"] == settings.default_model_name
        row["aliases"] = sorted(alias for alias, target in settings.aliases.items() if target == row["name"])
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(_table(rows))
    return 0


def describe(spec: ModelSpec) -> dict:
    found = (spec.path / "model_index.json").is_file()
    facts = model_facts(spec.path) if found else None
    return {
        "name": spec.name,
        "family": spec.family,
        "path": str(spec.path),
        "present": found,
        "license": facts.license if facts else None,
        "bytes": facts.disk_bytes if facts else None,
        "parameters": facts.parameters if facts else None,
        "stored_dtypes": list(facts.stored_dtypes) if facts else None,
        "native_size": _native_size(spec) if found else None,
        "source": spec.source,
    }


def _native_size(spec: ModelSpec) -> str:
    from pipelines.model_config import read_kandinsky_native_size  # torch-free

    if spec.family == "karlo":  # the super-resolution UNet decides, as in pipelines.karlo
        side = json.loads((spec.path / "super_res_first" / "config.json").read_text())["sample_size"]
        width, height = (side, side) if isinstance(side, int) else (side[1], side[0])
    else:
        width, height = read_kandinsky_native_size(spec.path)
    return f"{width}x{height}"


def _table(rows: list[dict]) -> str:
    header = ("NAME", "FAMILY", "LICENCE", "SIZE", "PARAMETERS", "DTYPE", "NATIVE", "FROM")
    lines = [header]
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        if row["aliases"]:
            name += f" [{len(row['aliases'])} aliases]"
        if not row["present"]:
            lines.append((name, row["family"], "-", "missing", "-", "-", "-", row["path"]))
            continue
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] < 1e9 else f"{row['bytes'] / 1e9:.2f} GB"
        params = f"{row['parameters'] / 1e6:.2f} M" if row["parameters"] < 1e9 else f"{row['parameters'] / 1e9:.2f} B"
        dtypes = "+".join(row["stored_dtypes"]) or "-"
        license_id = row["license"] or "-"
        lines.append((name, row["family"], license_id, size, params, dtypes, row["native_size"], row["source"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )
