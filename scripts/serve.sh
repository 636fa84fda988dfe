#!/usr/bin/env bash
# Installs Easel (first run only) and starts the server on the embedded default model.
# Arguments go to the server: scripts/serve.sh --port 9000 --api-key sk-local
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/bootstrap.sh" ""
exec "$py" -m server "$@"
