# syntax=docker/dockerfile:1
# The Portrait worker image (`portrait worker`; every other subcommand works too).
#
#   docker build -t portrait:0.1.0 .                                  # CPU: onnxruntime
#   docker build --build-arg VARIANT=gpu -t portrait:0.1.0-gpu .      # CUDA 12 + cuDNN 9, onnxruntime-gpu
#
# Settings are PORTRAIT_... environment variables (README, "Settings"). The image carries the
# committed model (models/artifact, an int8 graph: a CPU format); the GPU variant needs an export
# directory with the fp16 graph (`portrait export`) mounted and PORTRAIT_MODEL__PATH set, see
# ops/docker-compose.gpu.yml. The worker needs no torch: only the core dependencies are installed.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG ONNXRUNTIME_GPU=onnxruntime-gpu==1.22.0
ARG VARIANT=cpu

# ---- cpu: the package and its dependencies in a venv, copied onto a clean slim image ----------
FROM ${PYTHON_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/portrait
COPY pyproject.toml README.md /src/
COPY stream /src/stream
COPY models /src/models
COPY export /src/export
RUN /opt/portrait/bin/pip install /src

FROM ${PYTHON_IMAGE} AS cpu-base
COPY --from=cpu-build /opt/portrait /opt/portrait
ENV PORTRAIT_MODEL__DEVICE=cpu

# ---- gpu: CUDA runtime base, onnxruntime-gpu in place of onnxruntime ---------------------------
FROM ${CUDA_IMAGE} AS gpu-base
ARG ONNXRUNTIME_GPU
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/portrait
COPY pyproject.toml README.md /src/
COPY stream /src/stream
COPY models /src/models
COPY export /src/export
# onnxruntime and onnxruntime-gpu install the same import package: swap them, never keep both.
RUN /opt/portrait/bin/pip install /src \
    && /opt/portrait/bin/pip uninstall -y onnxruntime \
    && /opt/portrait/bin/pip install "${ONNXRUNTIME_GPU}" \
    && rm -rf /src
ENV PORTRAIT_MODEL__DEVICE=cuda

# ---- the worker image on the chosen base ------------------------------------------------------
FROM ${VARIANT}-base AS worker
RUN useradd --create-home --uid 10001 portrait \
    && mkdir -p /var/lib/portrait && chown portrait /var/lib/portrait
ENV PATH=/opt/portrait/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PORTRAIT_STATE_DIR=/var/lib/portrait/state
USER portrait
WORKDIR /var/lib/portrait
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=3)"]
ENTRYPOINT ["portrait"]
CMD ["worker"]
