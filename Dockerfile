# One image for both the controller (`python -m controller`) and the executor
# (`python -m executor ...`). Dependencies come from the committed, hashed lock file
# (requirements/runtime.txt), installed OFFLINE from a wheelhouse prepared next to this file:
#
#   python3 -m pip download --require-hashes --only-binary=:all: -d wheelhouse \
#       -r requirements/runtime.txt -r hack/images/build-requirements.txt
#   docker build --network none --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#       -t ghcr.io/openbao-backup/openbao-backup:0.1.0 .
#
# (hack/devenv/images.py does both, with a local base image, and caches the result.) The
# wheelhouse also holds the project's build backend (pinned in pyproject.toml and hashed in
# hack/images/build-requirements.txt), so nothing is fetched during the build.
#
# The base image is pinned by digest (Docker Hub's python:3.11-slim-bookworm); override it with
# --build-arg BASE_IMAGE=<ref>@sha256:<digest> to rebase on a patched base or a mirror. Refresh
# the pin with `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY wheelhouse /wheelhouse
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse \
      --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY controller controller
COPY executor executor
# The project itself (its build backend from the wheelhouse too), then pip and setuptools leave
# the runtime venv: nothing installs anything at run time.
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse --no-deps . \
 && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="openbao-backup" \
      org.opencontainers.image.description="Kubernetes-native backup manager for OpenBao Raft clusters (controller and executor)" \
      org.opencontainers.image.source="https://github.com/openbao-backup/openbao-backup" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["python", "-m"]
CMD ["controller"]
