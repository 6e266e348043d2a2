#!/usr/bin/env bash
# Set everything up, then run the test suite (lab tests included; they need root).
# Extra arguments go to pytest, e.g. `bash tools/test.sh --soak` or `-k arp`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/setup.sh"
cd "$ROOT"
"$VENV/bin/ruff" check stack splice apps tools tests
"$VENV/bin/mypy"    # type check of stack, splice and apps ([tool.mypy] in pyproject.toml)
exec "$VENV/bin/pytest" "$@"
