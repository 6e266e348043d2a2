#!/usr/bin/env bash
# Set everything up, then run the demo: the lab, the stack in it, real traffic.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/setup.sh"
exec "$VENV/bin/tapsplice" demo "$@"
