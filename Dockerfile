# dbpool: one bounded, monitored connection pool per registered external database, over HTTP.
# Build: docker build -t dbpool .    Run: docker-compose.yml, README.md "Running in production".
# Needs BuildKit (Docker's default builder since 23.0): the runtime stage uses RUN --mount.

# Stage 1: the dbpool wheel (its migrations inside, as app/_alembic) and the wheels of all its
# dependencies. The full python image has the compilers a platform without binary wheels needs.
FROM python:3.11 AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY alembic ./alembic
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Stage 2: the runtime. Only the wheels reach it (mounted for the install, not copied into a
# layer): no sources, no compilers, no build tools, no index at install time.
FROM python:3.11-slim

# DBPOOL_REQUIRE_AUTH: listening on every interface, the service refuses to start without
# DBPOOL_API_KEY / DBPOOL_ADMIN_API_KEY.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DBPOOL_HOST=0.0.0.0 \
    DBPOOL_PORT=8000 \
    DBPOOL_REQUIRE_AUTH=true

RUN groupadd --system --gid 10001 dbpool \
 && useradd --system --uid 10001 --gid dbpool --home-dir /srv/dbpool --no-create-home dbpool

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels dbpool

# The working directory is the service user's: without DBPOOL_REGISTRY_URL and
# DBPOOL_ENCRYPTION_KEYS, the embedded SQLite registry and the key file are created there.
WORKDIR /srv/dbpool
RUN chown dbpool:dbpool /srv/dbpool

USER 10001:10001
EXPOSE 8000

# slim has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DBPOOL_PORT', '8000') + '/healthz', timeout=2)"]

# One uvicorn worker per container; scale with replicas (pools and /metrics are per process).
CMD ["dbpool", "serve"]
