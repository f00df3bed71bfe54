#!/usr/bin/env bash
# The two set-up commands of the README, on a fresh Debian 12+ machine:
#   scripts/bootstrap.sh serve [agi-router serve options]   install and run the router (embedded defaults)
#   scripts/bootstrap.sh test  [pytest options]             install everything the tests need and run them
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
[ $# -gt 0 ] && shift
case "$mode" in serve|test) ;; *) echo "usage: $0 serve|test [options]" >&2; exit 64 ;; esac

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
apt_updated=0
ensure_debs() {
    local missing=() p
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    if [ $apt_updated = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null || ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    ensure_debs python3
    PY=python3
fi
"$PY" -c 'import venv, ensurepip' 2>/dev/null || ensure_debs python3-venv

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
$VPY -m pip install -q --upgrade pip >/dev/null 2>&1 || true

if [ "$mode" = serve ]; then
    # espeak-ng + sox speak the prompts on first start (the router streams two itself; `agi-router
    # asterisk setup` installs all of them for Asterisk)
    ensure_debs espeak-ng sox
    # install once per version of the project's dependencies (a second start takes seconds, not ~30 s)
    stamp=".venv/.agi-router-installed"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -x .venv/bin/agi-router ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        $VPY -m pip install -q -e .
        echo "$want" > "$stamp"
    fi
    exec .venv/bin/agi-router serve "$@"
fi

# test: the Debian packages the suite drives for real
ensure_debs $(sed 's/#.*//' scripts/test-debs.txt | tr '\n' ' ')
$VPY -m pip install -q -e ".[test]"
# static checks first: they take seconds and catch what tests would only find at run time
.venv/bin/ruff check agi_router tests benchmarks monitoring loadtest
.venv/bin/mypy
set +e
$VPY -m pytest "$@"
rc=$?
set -e
if [ $rc = 5 ]; then echo "bootstrap: pytest collected no test" >&2; exit 1; fi
exit $rc
