# syntax=docker/dockerfile:1

# --- builder: build the wheel and install it with its dependencies into /opt/venv -------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /build

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"
RUN pip install --upgrade pip

# pyproject.toml names README.md as the package's readme, so the build needs it too.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /build/dist . \
    && pip install /build/dist/chatrelay-*.whl

# --- runtime: the venv only, run as a non-root user ----------------------------------------------
FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 chatrelay \
    && useradd --system --uid 10001 --gid chatrelay --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin chatrelay

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# The default DATABASE_URL is sqlite:///data/chatrelay.db, relative to /app. The directory is
# created and owned by the user before VOLUME, so a new named volume starts out writable.
RUN mkdir -p /app/data && chown -R chatrelay:chatrelay /app
VOLUME ["/app/data"]

USER chatrelay

EXPOSE 8000

# No curl in slim images: probe liveness with the standard library.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

# Exec form: chatrelay is PID 1 and gets SIGTERM itself, draining generations for
# CHATRELAY_SHUTDOWN_GRACE seconds. Give `docker stop` more than that (compose sets 40 s).
CMD ["chatrelay", "serve", "--host", "0.0.0.0", "--port", "8000"]
