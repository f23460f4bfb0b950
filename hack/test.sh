#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what is needed, then lint, type-check,
# check the import layering, and run every test against the real local servers.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t0=$(date +%s)
bash hack/install-deps.sh
echo "== deps ready in $(( $(date +%s) - t0 ))s"
export PYTHONPATH="$root/hack${PYTHONPATH:+:$PYTHONPATH}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
set +e
# Line coverage of controller/ from the in-process parts of the suite (the e2e controller runs
# as a subprocess and is not measured); the table lists each module below 100%.
.venv/bin/pytest --cov --cov-report=term-missing:skip-covered "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
echo "== total $(( $(date +%s) - t0 ))s"
exit $rc
