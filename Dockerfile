# syntax=docker/dockerfile:1
#
# emailtoken-operator image: one image, two commands (`emailtoken run` for the operator,
# `emailtoken callback` for the sign-in service), chosen by the Helm chart's args.
#
#   make image        (docker or podman; the same as)
#   docker build -t ghcr.io/emailtoken-operator/emailtoken-operator:0.1.0 --build-arg VERSION=0.1.0 .
#
# Reproducible: the dependencies come from requirements/image.txt (exact versions, the sha256 of
# every file; `make lock` regenerates it), the project itself from a wheel built here without
# dependencies. requirements/install.sh does both, and tests/e2e/test_image_install.py runs the
# same script into a clean venv. The development tools (devtools/) are never installed.
#
# Both stages use the same pinned base, so the venv's interpreter path exists in the
# final stage. Pin by digest as well for reproducible builds, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# A venv without pip, first the pinned dependencies (pip install --require-hashes --no-deps
# --only-binary :all: -r requirements/image.txt; a layer that changes only with the lock)...
COPY requirements/ ./requirements/
RUN sh requirements/install.sh deps /opt/venv

# ...then the project's metadata and source, installed as a wheel with --no-deps.
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
RUN sh requirements/install.sh app /opt/venv . \
 && /opt/venv/bin/emailtoken --help > /dev/null

# ------------------------------------------------------------------------------ final
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/emailtoken-operator/emailtoken-operator

LABEL org.opencontainers.image.title="emailtoken-operator" \
      org.opencontainers.image.description="Keeps OAuth 2.0 access tokens for IMAP/POP3/SMTP mailboxes (Microsoft Entra ID, Google Gmail) fresh in Kubernetes Secrets" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# No pip, setuptools or wheel at run time (nothing installs anything in this image), and
# a passwd entry for the numeric user, which Python's getpass needs.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
 && groupadd --system --gid 65532 emailtoken \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin emailtoken

COPY --from=builder /opt/venv /opt/venv

# Read-only root filesystem: nothing is written outside /tmp (an emptyDir in the chart);
# pip compiled the bytecode at build time, so Python never tries to write it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp

USER 65532:65532
WORKDIR /tmp
# 8080: operator health (/healthz) or callback public (/callback); 8081: callback admin
# page (reach it with kubectl port-forward only); 9090: operator metrics (/metrics).
EXPOSE 8080 8081 9090

ENTRYPOINT ["emailtoken"]
CMD ["run", "--all-namespaces"]
