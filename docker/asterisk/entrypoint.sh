#!/bin/sh
# Asterisk in the 3646 stack: write the router's AMI secret where manager.conf #includes it (the same
# AMI_SECRET the router gets), then run Asterisk in the foreground as user asterisk, logging to stdout.
set -eu
if [ -z "${AMI_SECRET:-}" ]; then
    echo "asterisk-entrypoint: AMI_SECRET is empty: set it in docker/.env (see docker/.env.example)" >&2
    exit 2
fi
umask 027
printf '; written at start from AMI_SECRET (docker/.env)\nsecret = %s\n' "$AMI_SECRET" > /etc/asterisk/agi-router-ami.conf
chown asterisk:asterisk /etc/asterisk/agi-router-ami.conf
# -f foreground, -vvv verbose, -T timestamps, -U/-G drop to asterisk, -p realtime priority when allowed
exec /usr/sbin/asterisk -f -vvv -T -U asterisk -G asterisk "$@"
