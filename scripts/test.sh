#!/usr/bin/env bash
# Installs Easel with its test and ray extras (first run only), checks lint, format, types and the docs site,
# and runs the whole test suite.
# Arguments go to pytest: scripts/test.sh -k generations
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/bootstrap.sh" "test,ray"
cd "$repo_root"
"$py" -m ruff check --quiet .
"$py" -m ruff format --check --quiet .
"$py" -m mypy
# The docs site must build without a warning (broken links, missing anchors, pages outside the nav); into a
# temporary directory, so nothing is left in the checkout. Not --quiet: it hides the warnings --strict counts.
docs_site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 "$py" -m mkdocs build --strict --site-dir "$docs_site"
rm -rf "$docs_site"
exec "$py" -m pytest "$@"
