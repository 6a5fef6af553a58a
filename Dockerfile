# One image for both services. The first argument chooses the service:
#
#   docker run IMAGE repository-service serve     (the default command)
#   docker run IMAGE license-backend serve
#   docker run IMAGE license-backend migrate      (any console script of the package works)
#
# Configuration comes from LBS_* / QRS_* environment variables (see README.md); secrets are
# passed at run time, never baked into the image.

# ---- builder: resolve and install the package and its dependencies into a venv ----------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . .
# Every dependency ships binary wheels for CPython 3.11, so no compiler is needed; if one
# ever is, install it here (builder stage only), never in the runtime stage. pip also
# byte-compiles what it installs, so the read-only runtime never needs to write .pyc files.
RUN pip install --upgrade pip \
 && pip install .

# ---- runtime: the venv and a non-root user, nothing else --------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LBS_HOST=0.0.0.0 \
    QRS_HOST=0.0.0.0 \
    LBS_LOG_FORMAT=json \
    QRS_LOG_FORMAT=json

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

# The vendor trust anchor: the license backend's root public key, which every site verifies
# signing keys (and so keys, LEFs and definitions) against. Bake it in at build time:
#   docker build --build-arg LBS_TRUST_ROOT="$(license-backend keys root)" .
# A build without it has no default root: mount one at QRS_LBS_TRUST_ROOT_FILE (compose and
# k8s do), or the repository service refuses to start. A root that is not a usable Ed25519
# JWK (or JWKS) fails the build here rather than the site later.
ARG LBS_TRUST_ROOT=""
RUN mkdir -p /etc/site-licensing \
 && if [ -n "$LBS_TRUST_ROOT" ]; then \
        printf '%s\n' "$LBS_TRUST_ROOT" > /etc/site-licensing/lbs-trust-root.json \
     && python -c "import json, shared.trust as t; t.roots_from_document(json.load(open('/etc/site-licensing/lbs-trust-root.json')))"; \
    fi
ENV QRS_LBS_TRUST_ROOT_FILE=/etc/site-licensing/lbs-trust-root.json

USER 10001:10001
WORKDIR /tmp

# 4242: repository-service, 9200: license-backend.
EXPOSE 4242 9200

# Probes /health/live of whichever service runs: HEALTHCHECK_PORT if set, otherwise the
# port of the service named on PID 1's command line (LBS_PORT / QRS_PORT or its default).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; lbs = b'license-backend' in open('/proc/1/cmdline', 'rb').read(); port = os.environ.get('HEALTHCHECK_PORT') or (os.environ.get('LBS_PORT', '9200') if lbs else os.environ.get('QRS_PORT', '4242')); u.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4)"]

CMD ["repository-service", "serve"]
