#!/bin/sh
# agi-router in the 3646 stack: speak the prompts Asterisk plays into the shared sounds volume (only those
# missing: a second start takes no time), write the SIP side for Asterisk, then serve. `router-entrypoint --check` only checks the settings.
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
# the SIP accounts (generated passwords, shown once in this log), TLS certificate and their includes, for
# Asterisk's container to copy at its start ($AGI_ROUTER_SIP_EXPORT: a volume both mount)
if [ -n "${AGI_ROUTER_SIP_EXPORT:-}" ]; then
    agi-router asterisk setup --sip-only --etc "$AGI_ROUTER_SIP_EXPORT" --etc-as /etc/asterisk
fi
# a node of several (compose profile "national"): the node's whole Asterisk configuration with its [node]
# addresses and this router's AMI secret, for that node's Asterisk container to copy at its start
if [ -n "${AGI_ROUTER_NODE_EXPORT:-}" ]; then
    agi-router asterisk setup --etc "$AGI_ROUTER_NODE_EXPORT" --etc-as /etc/asterisk
fi
exec agi-router serve "$@"
