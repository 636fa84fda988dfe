#!/usr/bin/env bash
# Installs Easel with its test extras (first run only) and runs the whole test suite.
# Arguments go to pytest: scripts/test.sh -k generations
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/bootstrap.sh" "test"
export HF_HUB_OFFLINE=1
cd "$repo_root"
exec "$py" -m pytest "$@"
