# syntax=docker/dockerfile:1
# The suite: every service, the migrations and the admin commands, from one image. Build from
# the repository's root:  docker build -f deploy/docker/suite.Dockerfile -t chutes-suite:0.1.0 .
# Entry points (the Kubernetes manifests run them as the command):
#   python -m services.identity | registry | jobs | attestation | metrics   one service each
#   chutes-suite migrate                                                    the migrations Job
#   chutes-suite admin ...                                                  operators' commands
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chutes chutes
COPY services services
COPY gateway gateway
COPY suite suite
# Wheels of the suite and of all its dependencies, so the final stage needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 10001 --create-home chutes
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels chutes-suite
# The manifests run as this user and keep the root filesystem read-only: no .pyc written later.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001
WORKDIR /home/chutes
CMD ["chutes-suite", "--help"]
