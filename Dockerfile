# cloud-image-app's container: gunicorn serving create_app() on $PORT, as Cloud Run runs it.
#   docker build -t cloud-image-app .
#   docker run --rm -p 8080:8080 cloud-image-app        # embedded defaults: local disk, local model
# On Cloud Run set STORAGE_BACKEND=gcs, GCS_BUCKET and SECRET_KEY (see docs/deploy.md).

# The base image by digest (the multi-platform manifest of python:3.11.13-slim-bookworm), so a
# rebuild gets the same bytes; refresh it deliberately with
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# -- builder: the runtime dependencies, installed into a virtualenv ------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency ships a manylinux wheel, so no compiler or -dev package is needed.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first: this layer is rebuilt only when the lock changes. requirements.lock pins
# every runtime package, transitive ones included, with the hashes of its files (make lock), and
# --require-hashes refuses anything else: a swapped or new file on the index cannot get in.
# requirements-nodeps.txt: packages wanted only for a data file they carry (the face model),
# hashed too, installed without the dependencies they declare (the app never imports them).
COPY requirements.lock requirements-nodeps.txt /tmp/
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements-nodeps.txt

# -- runtime: the virtualenv and the app, nothing else -------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    PATH=/opt/venv/bin:$PATH \
    PORT=8080 \
    MEDIA_ROOT=/app/instance/media \
    MODEL_CACHE_DIR=/app/models
# PYTHONUNBUFFERED: log lines reach Cloud Logging as they are written, not when a buffer fills.
# MALLOC_ARENA_MAX: glibc gives each thread its own heap arena; with gthread workers decoding
# big images that multiplies resident memory for nothing.
# A numeric, non-root user: platforms that insist on non-root can check it without /etc/passwd.
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /app \
       --shell /usr/sbin/nologin app
# Tesseract reads the text in screenshots for the local labeler (LOCAL_FEATURES=text); it runs as
# a subprocess, so it holds no memory between uploads. About 30 MB with its English model.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr=5.3.0-2 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY cloud_image_app.py gunicorn.conf.py ./
COPY imaging ./imaging
COPY templates ./templates
COPY static ./static
# Bytecode and the local labeler's ONNX model (int8, from the committed calibration ranges)
# are made once here, not on every cold start.
# /app/instance is the only place the app writes (local media and its secret key, for docker run).
RUN python -m compileall -q cloud_image_app.py imaging \
    && python -m imaging.labeling.local "$MODEL_CACHE_DIR" \
    && mkdir -p /app/instance \
    && chown 10001:10001 /app/instance
USER 10001:10001
EXPOSE 8080
CMD ["gunicorn", "--config", "gunicorn.conf.py", "cloud_image_app:create_app()"]
