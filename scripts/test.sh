#!/usr/bin/env bash
# Installs Easel with its test and ray extras (first run only), checks lint, format, types and the docs site,
# and runs the whole test suite but the container image's build (the `container` marker: minutes of building).
# Arguments go to pytest: scripts/test.sh -k generations
#
# The suite runs on every core with pytest-xdist: EASEL_TEST_WORKERS workers (default: two per core, since most
# tests wait on servers rather than compute), tests of a heavy shared server kept on one worker (--dist loadgroup,
# groups set in tests/lanes.py), in the order tests/schedule.py puts them: the longest first. `-n 0` or `-p no:xdist` runs it in this one process, for debugging.
# scripts/test.sh --fast runs the fast lane: the tests that start no server or process and build no model
# (-m "not server and not model"; tests/lanes.py marks them by reading their code).
# scripts/test.sh --container runs only the container test (-m container: builds the Dockerfile's image and runs it
# with podman; skips where podman cannot work), without the checks above; CI (.ci/run) runs it after the suite.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/bootstrap.sh" "test,ray"
cd "$repo_root"

lane=(-m "not container")  # a later -m among the arguments replaces it
case "${1:-}" in
    --fast) shift; lane=(-m "not server and not model") ;;
    --container) shift; lane=(-m container) ;;
esac
if [ "${lane[1]}" != "container" ]; then
    "$py" -m ruff check --quiet .
    "$py" -m ruff format --check --quiet .
    "$py" -m mypy
    # The docs site must build without a warning (broken links, missing anchors, pages outside the nav); into a
    # temporary directory, so nothing is left in the checkout. Not --quiet: it hides the warnings --strict counts.
    docs_site="$(mktemp -d)"
    NO_MKDOCS_2_WARNING=1 "$py" -m mkdocs build --strict --site-dir "$docs_site"
    rm -rf "$docs_site"
fi

# Every pytest process rewrites the asserts of the test modules and of its plugins' packages (hypothesis and
# schemathesis: about 490 modules), 6 CPU seconds each time unless the rewritten code is cached; so cache compiled
# code even where PYTHONDONTWRITEBYTECODE is set, in one folder under .venv, never beside the sources.
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$repo_root/.venv/pycache}"
unset PYTHONDONTWRITEBYTECODE

parallel=(-n "${EASEL_TEST_WORKERS:-$(($("$py" -c 'import os; print(len(os.sched_getaffinity(0)))') * 2))}" --dist loadgroup --no-loadscope-reorder)
for arg in "$@"; do
    if [ "$arg" = "no:xdist" ] || [ "$arg" = "-pno:xdist" ]; then
        parallel=()
    fi
done
exec "$py" -m pytest "${parallel[@]}" "${lane[@]}" "$@"
