#!/usr/bin/env bash
# Creates .venv (once) and installs Easel into it. Sourced by serve.sh and test.sh.
#
# torch is installed first and on its own, so that the project's torch range
# never pulls a multi-GB CUDA build onto a CPU machine by accident:
#   - a torch already in .venv is kept (GPU users: install your CUDA build first);
#   - otherwise EASEL_TORCH_SPEC (default torch==2.13.0) is installed, from
#     EASEL_TORCH_INDEX when set (e.g. https://download.pytorch.org/whl/cpu).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EASEL_VENV:-$repo_root/.venv}"
extras="${1:-}"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
pip_quiet=(-q --disable-pip-version-check)

if ! "$py" -c "import torch" >/dev/null 2>&1; then
    torch_args=("${EASEL_TORCH_SPEC:-torch==2.13.0}")
    if [ -n "${EASEL_TORCH_INDEX:-}" ]; then
        torch_args+=(--index-url "$EASEL_TORCH_INDEX")
    fi
    echo "easel: installing ${torch_args[*]}" >&2
    "$py" -m pip install "${pip_quiet[@]}" "${torch_args[@]}"
fi

stamp="$venv/.easel-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ "$repo_root/pyproject.toml" -nt "$stamp" ]; then
    echo "easel: installing the project${extras:+ with [$extras]}" >&2
    "$py" -m pip install "${pip_quiet[@]}" -e "$repo_root${extras:+[$extras]}"
    touch "$stamp"
fi
