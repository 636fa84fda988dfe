#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels benchmarks/bench_gpu.py needs on the lent H200, whose image
# has torch 2.11, tokenizers, huggingface_hub and safetensors but no diffusers, an older transformers and
# no registry (README "Fast on a GPU"). Run it here, then hand .whl to the device run with carry.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl \
    diffusers==0.42.1 transformers==5.24.0 importlib-metadata==10.2.0 regex==2026.11.19 \
    starlette==1.10.0 uvicorn==0.54.0 python-multipart==0.0.34
ls -l .whl
