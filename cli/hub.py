"""The Hugging Face hub: a repository's files with their checksums, and downloads that survive interruption.

``huggingface_hub`` lists a revision's files with sizes and checksums
(``model_info(files_metadata=True)``), and gives the file URLs and the
request headers (the user's token, if any). The transfer itself is done
here: huggingface_hub 2.x downloads into a per-process temporary file that
it deletes when the download is interrupted, so a stopped multi-gigabyte
pull would start again from zero. Here the partial file is kept, named by
the file's checksum, and the next run continues it with an HTTP Range
request. Every file is checked against the hub's checksum (SHA-256 for LFS
files, the git blob id for the rest) before it is used; a weight file the
hub gives no SHA-256 for (one stored with Xet, whose git blob id is that of
a pointer, not of the bytes) is checked by its size, and the pull says so.
A connection that drops mid-file is retried from where it stopped, a few
times with growing waits; after that the pull stops with one line, and
running it again continues.

Import this module only with the hub online: ``huggingface_hub`` reads
``HF_HUB_OFFLINE`` once, when it is imported (see :mod:`cli.pull`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import build_hf_headers
from tqdm import tqdm

from .hubfiles import weight_file

METADATA_TIMEOUT = 15.0  # seconds: an unreachable hub fails the pull at once, not after minutes
TRANSFER_TIMEOUT = httpx.Timeout(15.0, read=60.0)
HASH_BLOCK = 1 << 20
LFS_THRESHOLD = 10 * 1024 * 1024  # the hub stores files this large outside git (LFS or Xet)
TRANSFER_ATTEMPTS = 5  # per file and run; then the pull stops and a new run continues from the kept bytes
FIRST_RETRY_WAIT = 0.5  # seconds, doubled for each further retry
RETRIED_STATUSES = (500, 502, 503, 504)
TOKEN_HINT = "set HF_TOKEN to a token that may read it (https://huggingface.co/settings/tokens)"


class HubError(Exception):
    """Something about the hub or a download, said for a person."""


class _Dropped(Exception):
    """A transfer that stopped short for a reason worth retrying."""


@dataclass(frozen=True)
class RemoteFile:
    repo: str
    commit: str
    name: str  # path inside the repository
    size: int
    sha256: str | None  # LFS files
    git_sha1: str | None  # the git blob id; None where it is not that of the file's bytes (Xet)

    @property
    def checksum(self) -> str:
        return self.sha256 or self.git_sha1 or f"size{self.size}"

    @property
    def size_only(self) -> bool:
        return self.sha256 is None and self.git_sha1 is None


def endpoint() -> str:
    return constants.ENDPOINT


def repo_files(repo: str, revision: str = "main") -> tuple[str, dict[str, RemoteFile]]:
    """The commit ``revision`` is at and every file in it (name -> file)."""
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True, timeout=METADATA_TIMEOUT)
    except OfflineModeIsEnabled:
        raise HubError("HF_HUB_OFFLINE is set in the environment: unset it to let `easel pull` download") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise HubError(_refused(repo, status)) from None
        raise HubError(f"the hub at {endpoint()} refused {repo}@{revision}: {error}") from None
    except Exception as error:  # connection refused, DNS, timeout: whatever the HTTP library raises
        raise HubError(
            f"cannot reach the Hugging Face hub at {endpoint()} ({type(error).__name__}: {error}). "
            "`easel pull` is the one command that needs the internet: run it where there is a connection "
            "(HF_ENDPOINT names a mirror), then copy $EASEL_HOME/models/NAME and registry.json to this machine"
        ) from None
    commit = str(info.sha)
    files = {sibling.rfilename: _remote_file(repo, commit, sibling) for sibling in info.siblings or []}
    return commit, files


def _remote_file(repo: str, commit: str, sibling) -> RemoteFile:
    size = int(sibling.lfs.size if sibling.lfs else sibling.size or 0)
    sha256 = sibling.lfs.sha256 if sibling.lfs else None
    # Without LFS metadata, weights (or anything LFS-sized) are in Xet: the blob id is a pointer's, not the bytes'.
    outside_git = sha256 is None and (weight_file(sibling.rfilename) is not None or size >= LFS_THRESHOLD)
    return RemoteFile(repo, commit, sibling.rfilename, size, sha256, None if outside_git else sibling.blob_id)


def _refused(repo: str, status: int) -> str:
    return (
        f"the hub answered {status} for {repo}: it is gated or private; accept its terms at "
        f"{endpoint()}/{repo} and {TOKEN_HINT}"
    )


def client() -> httpx.Client:
    # httpx drops the Authorization header itself when a redirect leaves the hub's host (LFS files live on a CDN).
    return httpx.Client(headers=build_hf_headers(), timeout=TRANSFER_TIMEOUT, follow_redirects=True)


def download(http: httpx.Client, file: RemoteFile, directory: Path) -> Path:
    """``file`` at ``directory / file.name``, checked; a partial download from an earlier run is continued."""
    target = directory / file.name
    if target.is_file() and target.stat().st_size == file.size and _matches(target, file):
        return target
    part = directory / f"{file.name}.{file.checksum[:16]}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, TRANSFER_ATTEMPTS + 1):
        have = part.stat().st_size if part.is_file() else 0
        if have > file.size:  # not this file after all
            part.unlink()
            have = 0
        if have >= file.size:
            break
        try:
            _transfer(http, file, part, have)
        except (httpx.TransportError, _Dropped) as error:  # reset, timeout, closed mid-body, a 5xx answer
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            if attempt == TRANSFER_ATTEMPTS:
                raise HubError(
                    f"{file.repo}: {file.name}: the connection failed {attempt} times ({reason}); what arrived is "
                    "kept: run the same command again to continue where it stopped"
                ) from None
            wait = FIRST_RETRY_WAIT * 2 ** (attempt - 1)
            got = part.stat().st_size if part.is_file() else 0
            _say(f"{file.name}: connection lost at {got} of {file.size} bytes ({reason}); resuming in {wait:g} s")
            time.sleep(wait)
    if not _matches(part, file):
        part.unlink()
        raise HubError(
            f"{file.repo}: {file.name} does not match the hub's checksum ({file.checksum}); the bad copy was "
            "deleted: run the same command again to download it afresh"
        )
    os.replace(part, target)
    return target


def _transfer(http: httpx.Client, file: RemoteFile, part: Path, have: int) -> None:
    url = hf_hub_url(file.repo, file.name, revision=file.commit, endpoint=endpoint())
    headers = {"Range": f"bytes={have}-"} if have else {}
    with http.stream("GET", url, headers=headers) as response:
        if response.status_code in (401, 403):
            raise HubError(_refused(file.repo, response.status_code))
        if response.status_code in RETRIED_STATUSES:
            raise _Dropped(f"the hub answered {response.status_code}")
        if response.status_code not in (200, 206):
            raise HubError(f"{file.repo}: {file.name}: the hub answered {response.status_code}")
        if have and response.status_code == 200:  # the server ignored the range: start over
            have = 0
        desc = file.name if len(file.name) <= 40 else "…" + file.name[-39:]
        bar = tqdm(
            total=file.size, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr
        )
        with bar, part.open("ab" if have else "wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
                out.flush()  # what arrived is on disk whatever stops this process, so a new run resumes from it
                bar.update(len(chunk))
    if part.stat().st_size < file.size:  # an answer without a length, cut short
        raise _Dropped(f"the answer ended at {part.stat().st_size} of {file.size} bytes")


def _matches(path: Path, file: RemoteFile) -> bool:
    if file.sha256 is not None:
        return _digest(path, hashlib.sha256()) == file.sha256
    if file.git_sha1 is not None:
        blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # git's object id of the file's bytes
        return _digest(path, blob) == file.git_sha1
    return path.stat().st_size == file.size


def _digest(path: Path, hasher) -> str:
    with path.open("rb") as stream:
        while block := stream.read(HASH_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
