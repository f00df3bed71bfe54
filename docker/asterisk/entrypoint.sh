#!/bin/sh
# Asterisk in the 3646 stack: write the router's AMI secret where manager.conf #includes it (the same
# AMI_SECRET the router gets), copy the SIP side the router wrote, then run Asterisk in the foreground as user asterisk, logging to stdout.
set -eu
if [ -z "${AMI_SECRET:-}" ]; then
    echo "asterisk-entrypoint: AMI_SECRET is empty: set it in docker/.env (see docker/.env.example)" >&2
    exit 2
fi
umask 027
# a node of several (compose profile "national"): its whole configuration as its router's `asterisk setup`
# installed it (the node's ports, routers and AMI secret), instead of the repository's files mounted read-only
if [ -n "${NODE_CONF:-}" ]; then
    if [ ! -f "$NODE_CONF/extensions.conf" ]; then
        echo "asterisk-entrypoint: $NODE_CONF/extensions.conf is missing: the node's router writes it at start (docker compose logs router-b)" >&2
        exit 2
    fi
    cp "$NODE_CONF"/*.conf /etc/asterisk/
fi
# the SIP accounts, TLS certificate and queue members the router wrote at its start (it starts first)
sip="${AGI_ROUTER_SIP_EXPORT:-/srv/asterisk-sip}"
if [ ! -f "$sip/agi-router-pjsip.conf" ]; then
    echo "asterisk-entrypoint: $sip/agi-router-pjsip.conf is missing: the router writes it at start (docker compose logs router)" >&2
    exit 2
fi
cp "$sip"/agi-router-* /etc/asterisk/
chown asterisk:asterisk /etc/asterisk/agi-router-*
printf '; written at start from AMI_SECRET (docker/.env)\nsecret = %s\n' "$AMI_SECRET" > /etc/asterisk/agi-router-ami.conf
chown asterisk:asterisk /etc/asterisk/agi-router-ami.conf
# -f foreground, -vvv verbose, -T timestamps, -U/-G drop to asterisk, -p realtime priority when allowed
exec /usr/sbin/asterisk -f -vvv -T -U asterisk -G asterisk "$@"
