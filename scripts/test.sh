#!/usr/bin/env bash
# Installs Easel with its test and ray extras (first run only), checks lint, format and types, and runs the whole test suite.
# Arguments go to pytest: scripts/test.sh -k generations
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/bootstrap.sh" "test,ray"
cd "$repo_root"
"$py" -m ruff check --quiet .
"$py" -m ruff format --check --quiet .
"$py" -m mypy
exec "$py" -m pytest "$@"
