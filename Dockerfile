# The kserve-py controller manager image. Build from the repository root (the same context as qpext's):
#
#   docker build -t kserve-py/manager:latest .
#
# Only the manager's packages and their runtime dependencies from pyproject.toml go in: no tests, no e2e
# tooling or qpext (their console scripts are removed), no dev extras, no pip in the final image. The
# process runs as UID 65532 and writes nothing outside /tmp, so it works with a read-only root filesystem
# (config/manager mounts an emptyDir at /tmp). The base is pinned to an exact Python release; pin it by
# digest too (--build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...) for reproducible builds.
# Without Docker or a registry, `python -m e2e.images build manager` builds this file with buildah and
# PYTHON_IMAGE set to the project's debootstrap Debian base (docs/images.md).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY apis/ apis/
COPY manager/ manager/
COPY controllers/ controllers/
COPY reconcilers/ reconcilers/
COPY webhooks/ webhooks/
RUN python -m venv /opt/kserve \
 && /opt/kserve/bin/pip install . \
 && /opt/kserve/bin/pip uninstall --yes pip setuptools \
 && rm /opt/kserve/bin/qpext /opt/kserve/bin/kserve-localcluster \
 && /opt/kserve/bin/python -m compileall -q /opt/kserve

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/kserve /opt/kserve
ENV PATH=/opt/kserve/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 8081 9443
ENTRYPOINT ["kserve-manager"]
