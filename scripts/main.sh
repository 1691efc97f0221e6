#!/usr/bin/env bash
# The main job: set up .venv if needed, then run the default benchmark on the embedded synthetic data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/env.sh
exec .venv/bin/mcam bench loro "$@"
