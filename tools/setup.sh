#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (run as root): Debian packages the
# lab and the benchmarks need, then a virtual environment in .venv with tapsplice
# installed in editable mode. Sourced by tools/demo.sh and tools/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
APT_PACKAGES=(python3 python3-venv python3-dev gcc iproute2 iputils-ping curl nginx-light procps tcpdump tshark nftables microsocks dante-server chromium dnsmasq-base)

if [ "$(id -u)" != 0 ]; then
    echo "tapsplice set-up needs root (network namespaces, TAP devices, apt-get)" >&2
    exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "[setup] installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx-light's package starts a system nginx on port 80 in the root namespace; the
# project never uses it, so stop it (the lab starts its own origin inside tss).
# The same for dante-server (a benchmark baseline, started by the harness in a namespace).
for svc in nginx danted; do
    if command -v systemctl >/dev/null && systemctl is-enabled --quiet "$svc" 2>/dev/null; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done

PY="${TAPSPLICE_PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    PY=/usr/bin/python3
fi
stamp="$VENV/.tapsplice-stamp"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] creating virtual environment in $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e "$ROOT[test]"
    echo "$want" > "$stamp"
fi
