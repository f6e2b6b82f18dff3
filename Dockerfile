# syntax=docker/dockerfile:1
# One image for every hivebus service: `hivebus provision`, `hivebus serve orchestrator|agent|
# knowledge|dashboard` (see docker-compose.yml). Built from uv.lock, so the image runs exactly
# the locked versions the test suite ran.
#
#   docker build -t hivebus:local .
#
# Stage `build` installs the locked workspace into /opt/hivebus/venv with uv; the final stage
# is the same Python base image with only that venv copied in: no uv, no compiler, no sources.

# uv's own image only provides the binary; pinned to the uv version in uv.lock.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
# The venv is created where the final stage runs it: its scripts name their interpreter by
# absolute path, and its `python` links to the base image's /usr/local/bin/python3.11.
ENV UV_PROJECT_ENVIRONMENT=/opt/hivebus/venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# Third-party dependencies first, from the lock alone: this layer is rebuilt only when
# uv.lock or the root pyproject.toml change, not on every source edit.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace
# Then the workspace packages (contracts/ and services/*), installed as wheels, not editable:
# the final stage has no source tree to point back to.
COPY contracts ./contracts
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="hivebus" \
      org.opencontainers.image.description="LLM agents as independent services on NATS JetStream"
# A fixed uid/gid, so files on named volumes keep one owner across image rebuilds.
# /var/lib/hivebus/knowledge (the knowledge store) and /etc/hivebus/workspace (the sample
# hivebus.yaml's `workspace: workspace`, relative to /etc/hivebus/hivebus.yaml) exist in the
# image owned by that user: a named volume mounted there starts with that ownership. Their
# parents, where the configuration is mounted, stay root's.
RUN groupadd --system --gid 10001 hivebus \
    && useradd --system --uid 10001 --gid hivebus --create-home --home-dir /home/hivebus \
        --shell /usr/sbin/nologin hivebus \
    && install -d /etc/hivebus /var/lib/hivebus \
    && install -d -o hivebus -g hivebus /etc/hivebus/workspace /var/lib/hivebus/knowledge
COPY --from=build --chown=root:root /opt/hivebus/venv /opt/hivebus/venv
ENV PATH=/opt/hivebus/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HIVEBUS_CONFIG_FILE=/etc/hivebus/hivebus.yaml \
    HIVEBUS_KNOWLEDGE_DIR=/var/lib/hivebus/knowledge \
    HIVEBUS_LOG_FORMAT=json \
    HIVEBUS_HEALTH_FILE=/tmp/hivebus-health
# Numeric, so a runtime can tell it is not root without reading /etc/passwd (runAsNonRoot).
USER 10001:10001
WORKDIR /home/hivebus
# The serve processes stop on SIGTERM: agents checkpoint and release their runs, so give them
# time (docker-compose.yml sets stop_grace_period).
STOPSIGNAL SIGTERM
# `hivebus health` exits 0 while this container's serve process keeps its heartbeat file
# (HIVEBUS_HEALTH_FILE) fresh. One-shot containers (`provision`) turn the check off.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["hivebus", "health"]
ENTRYPOINT ["hivebus"]
CMD ["--help"]
