#!/bin/sh
# Creates the data directory and the backup directory (the service's StateDirectory would too: creating it here lets the
# admin commands run before the first start) and starts or restarts the service where systemd
# runs. Called as "postinst configure VERSION" by dpkg and "%post N" by rpm.
set -e
install -d -m 0700 -o keyward -g keyward /var/lib/keyward /var/backups/keyward
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable keyward.service >/dev/null
	if systemctl is-active --quiet keyward.service; then
		systemctl restart keyward.service
	elif ! systemctl start keyward.service; then
		echo "keyward: the service did not start; see: journalctl -u keyward" >&2
	fi
fi
