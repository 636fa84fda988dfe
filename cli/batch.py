"""``easel batch``: OpenAI's Batch API for images from the terminal, on a running server.

``submit`` uploads a JSONL file and creates a batch (printing its id),
``status`` and ``list`` show batches, ``download`` writes the output and error
files (and, with ``--images``, the images in them), ``cancel`` stops one.
``--wait`` follows a batch to its end with a progress bar on stderr; Ctrl-C
stops waiting, never the batch. Exit status: 0; 1 for an error the server
answers (one line, in its words), a server that cannot be reached, or a batch
that ends ``failed``, ``expired`` or ``cancelled``; 2 for a command-line
mistake; 130 when Ctrl-C stopped the wait.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from server.settings.options import OneLineParser

from .batch_client import BatchClient
from .batch_download import download
from .batch_wait import summary, wait
from .image_request import CommandError

ENDPOINTS = ("/v1/images/generations", "/v1/images/edits")
DEFAULT_SERVER = "http://127.0.0.1:8000"
INTERRUPTED = 130
DESCRIPTION = (
    "Image batches (OpenAI's Batch API) on a running server: submit a JSONL file of requests, follow it, "
    "download its answers, list or cancel batches. Ctrl-C during --wait stops waiting, not the batch."
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="easel batch", description=DESCRIPTION)
    server = OneLineParser(add_help=False)
    where = server.add_argument_group("the server")
    where.add_argument(
        "--server",
        metavar="URL",
        default=os.environ.get("EASEL_BASE_URL", DEFAULT_SERVER),
        help=f"the Easel to talk to, with or without /v1 (env EASEL_BASE_URL; default {DEFAULT_SERVER})",
    )
    where.add_argument("--api-key", default=os.environ.get("EASEL_API_KEY"), help="bearer key (env EASEL_API_KEY)")
    commands = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    submit = commands.add_parser("submit", parents=[server], help="upload a JSONL file of requests and start a batch")
    submit.add_argument("file", type=Path, help="one request a line: {custom_id, method, url, body}")
    submit.add_argument(
        "--endpoint", choices=ENDPOINTS, help="the lines' endpoint (default: the first line's url, else generations)"
    )
    submit.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="a metadata entry (repeatable)"
    )
    submit.add_argument("--wait", action="store_true", help="follow the batch to its end")

    status = commands.add_parser("status", parents=[server], help="show a batch's status and progress")
    status.add_argument("batch_id")
    status.add_argument("--wait", action="store_true", help="follow the batch to its end")
    status.add_argument("--json", action="store_true", help="print the whole batch object")

    fetch = commands.add_parser("download", parents=[server], help="write a finished batch's output and error files")
    fetch.add_argument("batch_id")
    fetch.add_argument("-o", "--out", type=Path, default=Path("."), help="directory for the files (default: here)")
    fetch.add_argument("--images", action="store_true", help="also decode each answer's b64_json images to files")

    listing = commands.add_parser("list", parents=[server], help="the newest batches, newest first")
    listing.add_argument("--limit", type=int, default=20, help="how many (default 20)")

    cancel = commands.add_parser("cancel", parents=[server], help="stop a batch (its answered lines are kept)")
    cancel.add_argument("batch_id")
    return parser


def run(name: str, argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "limit", 1) < 1:
        parser.error("--limit must be at least 1")
    metadata = _metadata(parser, getattr(args, "metadata", []))
    batch_id = getattr(args, "batch_id", None)
    try:
        with BatchClient(args.server, args.api_key) as client:
            return _ACTIONS[args.action](client, args, metadata)
    except CommandError as error:
        print(f"easel batch {args.action}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        batch_id = getattr(args, "created_id", None) or batch_id
        if batch_id is None:
            print(f"easel batch {args.action}: interrupted", file=sys.stderr)
        else:
            print(
                f"easel batch: stopped waiting; {batch_id} keeps running "
                f"(easel batch status {batch_id} --wait, or easel batch cancel {batch_id})",
                file=sys.stderr,
            )
        return INTERRUPTED
    except (KeyError, TypeError, ValueError) as error:
        print(f"easel batch {args.action}: error: an answer of {args.server} is not the Batch API's: {error!r}",
              file=sys.stderr)  # fmt: skip
        return 1


def _metadata(parser: argparse.ArgumentParser, entries: list[str]) -> dict[str, str]:
    metadata = {}
    for entry in entries:
        key, equals, value = entry.partition("=")
        if not equals or not key:
            parser.error(f"--metadata takes KEY=VALUE, not {entry!r}")
        metadata[key] = value
    return metadata


def _submit(client: BatchClient, args: argparse.Namespace, metadata: dict[str, str]) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {args.file}: {error.strerror}") from None
    endpoint = args.endpoint or _first_url(data)
    file_id = client.upload(args.file.name, data)
    try:
        batch = client.create(file_id, endpoint, metadata)
    except CommandError:
        client.delete_file(file_id)  # the server refused the batch: leave no orphaned upload behind
        raise
    args.created_id = batch["id"]
    print(batch["id"], flush=True)
    return _follow(client, batch) if args.wait else 0


def _first_url(data: bytes) -> str:
    """The first request line's ``url`` when it names an image endpoint; the server checks every line."""
    for text in data.splitlines():
        if text.strip():
            try:
                url = json.loads(text).get("url")
            except (ValueError, AttributeError):
                break
            return url if url in ENDPOINTS else ENDPOINTS[0]
    return ENDPOINTS[0]


def _status(client: BatchClient, args: argparse.Namespace, _: dict[str, str]) -> int:
    batch = client.retrieve(args.batch_id)
    if args.wait:
        return _follow(client, batch)
    print(json.dumps(batch, indent=2) if args.json else summary(batch))
    return 0


def _follow(client: BatchClient, batch: dict[str, Any]) -> int:
    """Wait for the end; 0 when completed, else 1 with one line saying how it ended."""
    batch = wait(client, batch)
    if batch["status"] == "completed":
        return 0
    errors = [str(error.get("message")) for error in (batch.get("errors") or {}).get("data") or ()]
    reason = f": {'; '.join(errors)}" if errors else ""
    print(f"easel batch: {summary(batch)}{reason}", file=sys.stderr)
    return 1


def _download(client: BatchClient, args: argparse.Namespace, _: dict[str, str]) -> int:
    for path in download(client, client.retrieve(args.batch_id), args.out, args.images):
        print(path)
    return 0


def _list(client: BatchClient, args: argparse.Namespace, _: dict[str, str]) -> int:
    for batch in client.recent(args.limit):
        created = datetime.fromtimestamp(int(batch.get("created_at") or 0), timezone.utc)
        print(f"{summary(batch)}  {batch.get('endpoint', '')}  created {created:%Y-%m-%d %H:%M:%S}Z")
    return 0


def _cancel(client: BatchClient, args: argparse.Namespace, _: dict[str, str]) -> int:
    print(summary(client.cancel(args.batch_id)))
    return 0


_ACTIONS = {"submit": _submit, "status": _status, "download": _download, "list": _list, "cancel": _cancel}
