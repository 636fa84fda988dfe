#!/usr/bin/env bash
# CI (.ci/run): installs what the container test (tests/container) needs, Debian's podman, runc and debootstrap,
# when they are missing. Needs root and apt; without them it says so and the test skips.
set -euo pipefail
tools=(podman runc debootstrap)
missing=()
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "easel: ${missing[*]} missing and not installable here (needs root and apt): the container test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
