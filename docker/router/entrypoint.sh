#!/bin/sh
# agi-router in the 3646 stack: speak the prompts Asterisk plays into the shared sounds volume (only those
# missing: a second start takes no time), then serve. `router-entrypoint --check` only checks the settings.
set -eu
if [ -z "${AGI_ROUTER_AMI_SECRET:-}" ] || [ -z "${AGI_ROUTER_PSEUDONYM_KEY:-}" ]; then
    echo "router-entrypoint: AGI_ROUTER_AMI_SECRET and AGI_ROUTER_PSEUDONYM_KEY must be set (docker/.env)" >&2
    exit 2
fi
sounds="$(python -c 'from agi_router.config import load_settings as l; s=l(); print(s.path(__import__("pathlib").Path(s.speech.sounds_dir)))')"
if [ "${1:-}" = "--check" ]; then
    exec agi-router policy check
fi
agi-router prompts build "$sounds" --only-missing
exec agi-router serve "$@"
