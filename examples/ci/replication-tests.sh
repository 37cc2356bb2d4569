#!/usr/bin/env bash
# A downstream project's replication tests in CI, as plain steps: the same steps as
# examples/ci/github-workflow.yml, runnable anywhere (this repository's own CI runs it).
#
#   PROJECT_DIR   the project whose tests run                      (default: the current folder)
#   HARNESS_SPEC  what pip installs for the harness: a checkout's path, a wheel, a git URL (required)
#   PG_VERSION    PostgreSQL major version, built from Debian packages (13, 15, 17, 18; default 17)
#   PG_IMAGE      or an image with PostgreSQL to build on (postgres:17), where a registry is at hand
#   PYTEST_MARKERS  a shard of the suite by marker expression: failover, "not failover"
#   PYTEST_ARGS   more pytest arguments, split on spaces: workers (-n auto, -n 2), -x
#   IMAGE_CACHE   a folder kept between CI runs: the images are saved there and loaded from it
#   RESULTS_DIR   JUnit XML and failed tests' evidence, to upload as artifacts
#                 (default: PROJECT_DIR/test-results)
#   VENV_DIR      the virtual environment to make                  (default: PROJECT_DIR/.venv-pgharness)
#
# Exit status: pytest's (0 all passed, 1 some failed, ...), or 1 when a step before it fails.
set -euo pipefail

project=$(cd "${PROJECT_DIR:-.}" && pwd)
results=$(realpath -m "${RESULTS_DIR:-$project/test-results}")   # a relative one: from the current folder
venv=${VENV_DIR:-$project/.venv-pgharness}
export PG_VERSION=${PG_VERSION:-17}

step() { printf '\n### %s\n' "$*"; }

step "1. Docker: an engine that answers, and Compose v2"
docker info --format 'Docker Engine {{.ServerVersion}}' \
    || { echo "no Docker engine answers: start one (Linux: dockerd; macOS/Windows: Docker Desktop)" >&2; exit 1; }
docker compose version

step "2. The harness, in a virtual environment of its own"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "${HARNESS_SPEC:?set HARNESS_SPEC to what pip installs: a path, a wheel or a git URL}" \
    pytest-xdist

step "3. The node image for PostgreSQL $PG_VERSION${PG_IMAGE:+ on $PG_IMAGE} (the cache first)"
cache_name=$(printf 'pgharness-%s.tar' "${PG_IMAGE:-pg$PG_VERSION}" | tr ':/' '--')
cache_tar=${IMAGE_CACHE:+$IMAGE_CACHE/$cache_name}
if [ -n "$cache_tar" ] && [ -f "$cache_tar" ]; then
    docker load --quiet --input "$cache_tar"
fi
before=$(docker images --quiet --no-trunc | sort | sha256sum)
tag=$("$venv/bin/pgharness" image)
echo "node image: $tag"
if [ -n "$cache_tar" ] && { [ ! -f "$cache_tar" ] || [ "$before" != "$(docker images --quiet --no-trunc | sort | sha256sum)" ]; }; then
    # Built now, or not cached yet: keep the node image and its Debian base for the next run.
    mkdir -p "$IMAGE_CACHE"
    keep=("$tag")
    base=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E "^pgharness/base:$PG_VERSION-" | head -n1 || true)
    if [ -z "${PG_IMAGE:-}" ] && [ -n "$base" ]; then keep+=("$base"); fi
    docker save --output "$cache_tar" "${keep[@]}"
    echo "saved ${keep[*]} to $cache_tar"
fi

step "4. The project's tests"
mkdir -p "$results"
cd "$project"
args=(-p no:cacheprovider --junitxml="$results/junit.xml" --evidence-dir="$results/evidence")
if [ -n "${PYTEST_MARKERS:-}" ]; then args+=(-m "$PYTEST_MARKERS"); fi
# shellcheck disable=SC2206  # PYTEST_ARGS is a list of words on purpose
args+=(${PYTEST_ARGS:-})
status=0
"$venv/bin/pytest" "${args[@]}" || status=$?
if [ -d "$results/evidence" ]; then
    echo "failed tests left their evidence (logs, status) in $results/evidence"
fi
exit "$status"
