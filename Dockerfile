# One image for the server and the workers (`runyard server` / `runyard worker`).
# PyPI's Linux torch wheels bundle the CUDA runtime; the host's NVIDIA driver comes in
# through the container toolkit (see the worker's GPU reservation in docker-compose.yml).
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUNYARD_HOME=/data \
    RUNYARD_ARTIFACT_ROOT=/data/artifacts \
    RUNYARD_DATA_DIR=/data/datasets \
    RUNYARD_HOST=0.0.0.0

WORKDIR /app

# Dependencies first, so code changes do not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir -p trainer_core server worker migrations webui \
    && touch trainer_core/__init__.py server/__init__.py worker/__init__.py migrations/__init__.py webui/__init__.py \
    && pip install ".[s3]" \
    && pip uninstall -y runyard

COPY trainer_core ./trainer_core
COPY server ./server
COPY worker ./worker
COPY migrations ./migrations
COPY webui ./webui
RUN pip install --no-deps . && useradd --create-home --uid 1000 runyard && mkdir -p /data && chown runyard /data

USER runyard
VOLUME ["/data"]
EXPOSE 8000
CMD ["runyard", "server"]
