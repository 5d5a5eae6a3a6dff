# dbpool: one bounded, monitored connection pool per registered external database, over HTTP.
# Build: docker build -t dbpool .    Run: docker-compose.yml, README.md "Running in production".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DBPOOL_HOST=0.0.0.0 \
    DBPOOL_PORT=8000

RUN groupadd --system --gid 10001 dbpool \
 && useradd --system --uid 10001 --gid dbpool --home-dir /srv/dbpool --no-create-home dbpool

# `dbpool migrate` finds alembic/ next to the app package (then in the working directory).
# An editable install keeps app/ and alembic/ side by side in WORKDIR; a plain install would
# put app/ in site-packages, whose sibling "alembic" is the Alembic library itself.
WORKDIR /srv/dbpool
COPY pyproject.toml README.md ./
COPY app ./app
COPY alembic ./alembic
# Only the directory itself is the service user's: the embedded SQLite registry and key file
# may be created there, while the code stays read-only to it.
RUN pip install --no-cache-dir -e . \
 && chown dbpool:dbpool /srv/dbpool

USER 10001:10001
EXPOSE 8000

# slim has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DBPOOL_PORT', '8000') + '/healthz', timeout=2)"]

# One uvicorn worker per container; scale with replicas (pools and /metrics are per process).
CMD ["dbpool", "serve"]
