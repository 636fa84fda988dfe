#!/usr/bin/env bash
# The container test's base image: these machines have no registry, so it is made here. A minimal Debian root
# (debootstrap minbase, with python3, python3-venv and ca-certificates), the host's own release, imported into
# podman. The root is cached as a tarball keyed by release, mirror and package list, so only a machine's first run
# (or a changed list) pays for debootstrap. Needs root, debootstrap and podman. Prints the image's name.
# Usage: scripts/container_base.sh [IMAGE_REPOSITORY]
set -euo pipefail

repository="${1:-localhost/easel-test-base}"
release="${EASEL_BASE_RELEASE:-$(. /etc/os-release && echo "$VERSION_CODENAME")}"
mirror="${EASEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages="python3,python3-venv,ca-certificates"
key="$(printf '%s\n' "$release" "$mirror" "$packages" | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/easel-tests"
tarball="$cache/debian-$release-$key.tar"

if [ ! -f "$tarball" ]; then
    mkdir -p "$cache"
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    echo "easel: debootstrap $release ($packages) into $root" >&2
    debootstrap --variant=minbase --include="$packages" "$release" "$root" "$mirror" >&2
    # The downloaded packages and apt's lists are of no use in the image.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
fi

image="$repository:$key"
if ! podman image exists "$image"; then
    podman import --quiet "$tarball" "$image" >&2
fi
echo "$image"
