#!/usr/bin/env bash
# The tests: set up .venv if needed, then run pytest (fast tests; `-m slow` for the rest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/env.sh
exec .venv/bin/python -m pytest "$@"
