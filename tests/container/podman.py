"""Building and running Easel's image with podman, the way these machines allow.

podman here needs runc (crun fails on the hybrid cgroup layout), the cgroupfs
manager, explicit ulimits on every build and run (its defaults are refused) and
the host's network. A build step reaches PyPI only with the host's CA bundle
and pip configuration mounted in, read-only and only for the build: nothing of
them is baked into the image.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GLOBAL_FLAGS = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's system bundle
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "easel-tests"  # as container_base.sh
PIP_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.config/pip/pip.conf", "~/.pip/pip.conf")


def why_not_runnable() -> str | None:
    """Why podman cannot build and run the image here, or None when it can."""
    if os.geteuid() != 0:
        return "the container test needs root (debootstrap and podman's root storage)"
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return f"the container test needs {', '.join(missing)} (.ci/run installs them with apt)"
    return None


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *GLOBAL_FLAGS, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """One holder at a time on this machine. Test workers (pytest-xdist) that each build the image take turns:
    the first builds, the others find every layer cached; and only one makes the base image."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def base_image() -> str:
    """The minimal Debian base image (scripts/container_base.sh makes it, or finds it cached)."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "container_base.sh")], capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


def host_pip_paths() -> list[Path]:
    """The host's pip configuration files and the local paths they name (wheel directories, indexes, files)."""
    files = [Path(name).expanduser() for name in PIP_CONFIG_FILES]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    paths: set[Path] = set()
    for file in filter(Path.is_file, files):
        paths.add(file)
        config = configparser.ConfigParser(interpolation=None)
        config.read(file)
        for section in config.sections():
            for value in config[section].values():
                for word in value.split():
                    path = Path(word.removeprefix("file://"))
                    if path.is_absolute() and path.exists():
                        # A local index's pages link to its files beside it (../../files/...): mount the index's root.
                        paths.add(path.parent if path.name == "simple" else path)
    return sorted(paths)


def build_command(tag: str, base: str) -> list[str]:
    """``podman build`` of the cpu target on ``base``, with torch and the rest from the host's pip configuration."""
    mounts = [CA_BUNDLE, *host_pip_paths()]
    volumes = [flag for path in dict.fromkeys(mounts) for flag in ("--volume", f"{path}:{path}:ro")]
    return [
        "build",
        *LIMITS,
        "--network",
        "host",
        "--format",
        "docker",  # OCI images have no HEALTHCHECK
        "--target",
        "cpu",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        "TORCH_INDEX=",  # pip's own configuration: the local CPU wheel
        *volumes,
        "--tag",
        tag,
        str(REPO),
    ]


def run_command(name: str, tag: str, volume: str, port: int, network: str = "host") -> list[str]:
    return ["run", "--detach", "--name", name, *LIMITS, "--network", network, "--env", f"EASEL_PORT={port}",
            "--volume", f"{volume}:/data", tag]  # fmt: skip
