#!/usr/bin/env bash
# Runs inside the image build (Dockerfile), as root, in two steps so that a change to the code keeps the layer
# with torch and the dependencies:
#   dependencies: with only pyproject.toml and the scripts copied in, scripts/bootstrap.sh installs torch (from
#                 TORCH_INDEX when set) and the project's dependencies into /opt/easel/.venv;
#   project:      with the whole tree copied in, bootstrap.sh installs the project itself (easel-mini included),
#                 the code is compiled once (the user who runs it cannot write there), and the user `easel` and
#                 its volume /data are made.
# pip keeps no cache and no build tools are installed: the image carries only what runs.
set -euo pipefail
step="$1"
export EASEL_VENV=/opt/easel/.venv PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export EASEL_TORCH_INDEX="${TORCH_INDEX:-}"

case "$step" in
dependencies)
    # pyproject.toml names README.md; a placeholder keeps an edit of the README from rebuilding this layer.
    touch /opt/easel/README.md
    bash /opt/easel/scripts/bootstrap.sh ""
    ;;
project)
    rm -f "$EASEL_VENV"/.easel-installed  # the first step installed a project with no code yet
    bash /opt/easel/scripts/bootstrap.sh ""
    "$EASEL_VENV/bin/python" -m compileall -q /opt/easel/server /opt/easel/pipelines /opt/easel/cli /opt/easel/weights
    useradd --uid 10001 --user-group --create-home --home-dir /home/easel --shell /usr/sbin/nologin easel
    mkdir -p /data
    chown easel:easel /data
    ;;
*)
    echo "usage: container_install.sh dependencies|project" >&2
    exit 2
    ;;
esac
