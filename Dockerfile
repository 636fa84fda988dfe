# Easel's container image: two targets from one file (docs/container.md).
#   docker build -t easel .                      # cpu, the default: CPU torch
#   docker build -t easel:cuda --target cuda .   # CUDA torch on a CUDA runtime base
# Both install with scripts/bootstrap.sh, as scripts/serve.sh does, and bake easel-mini in, so the image serves
# offline from its first second. Build arguments pick the base images and where torch comes from.

# The cpu base needs python3 with venv; the cuda base gets them from apt below.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG CUDA_BASE_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04
# Where pip finds torch (EASEL_TORCH_INDEX); empty: pip's own configuration decides.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG CUDA_TORCH_INDEX=https://download.pytorch.org/whl/cu130

# ---- cuda: first, so that building the default (last) target never touches the CUDA base
FROM ${CUDA_BASE_IMAGE} AS cuda
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ARG CUDA_TORCH_INDEX
# torch and the dependencies first, from the project file alone: a change to the code keeps this layer.
COPY pyproject.toml /opt/easel/
COPY scripts/bootstrap.sh scripts/container_install.sh /opt/easel/scripts/
RUN TORCH_INDEX="$CUDA_TORCH_INDEX" bash /opt/easel/scripts/container_install.sh dependencies
COPY . /opt/easel/
RUN bash /opt/easel/scripts/container_install.sh project
ENV EASEL_HOME=/data EASEL_IMAGE_DIR=/data/images EASEL_HOST=0.0.0.0 EASEL_PORT=8000 EASEL_SHUTDOWN_TIMEOUT=8 \
    HOME=/home/easel PATH=/opt/easel/.venv/bin:$PATH PYTHONUNBUFFERED=1
USER easel
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 CMD ["python", "/opt/easel/scripts/container_health.py"]
ENTRYPOINT ["easel"]

# ---- cpu: the default target
FROM ${BASE_IMAGE} AS cpu
ARG TORCH_INDEX
COPY pyproject.toml /opt/easel/
COPY scripts/bootstrap.sh scripts/container_install.sh /opt/easel/scripts/
RUN TORCH_INDEX="$TORCH_INDEX" bash /opt/easel/scripts/container_install.sh dependencies
COPY . /opt/easel/
RUN bash /opt/easel/scripts/container_install.sh project
# Every setting is an EASEL_* variable (docs/reference/options.md); these are the image's defaults.
# EASEL_SHUTDOWN_TIMEOUT=8 lets a drain finish inside `docker stop`'s default 10 seconds.
ENV EASEL_HOME=/data EASEL_IMAGE_DIR=/data/images EASEL_HOST=0.0.0.0 EASEL_PORT=8000 EASEL_SHUTDOWN_TIMEOUT=8 \
    HOME=/home/easel PATH=/opt/easel/.venv/bin:$PATH PYTHONUNBUFFERED=1
USER easel
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 CMD ["python", "/opt/easel/scripts/container_health.py"]
ENTRYPOINT ["easel"]
