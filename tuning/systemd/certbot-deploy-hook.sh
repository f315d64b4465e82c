#!/bin/sh
# certbot deploy hook: make the renewed certificate readable by the gateway and tell it to reload.
# Install: cp certbot-deploy-hook.sh /etc/letsencrypt/renewal-hooks/deploy/portcullis.sh
#          chmod 0755 /etc/letsencrypt/renewal-hooks/deploy/portcullis.sh
# The gateway also notices changed files by itself within tls.watch_interval_ms; the reload makes
# it immediate. A broken pair is refused and the old certificate stays in service (see the
# security log and portcullis_tls_certificate_reloads_total{result="refused"}).
set -eu
for dir in /etc/letsencrypt/live /etc/letsencrypt/archive; do
    chgrp -R portcullis "$dir"
    chmod -R g+rX "$dir"
done
systemctl reload portcullis.service
