#!/bin/sh
# Removal keeps /var/lib/keyward (the escrowed keys and the master key), /etc/keyward and the
# keyward user, even on purge: destroying recovery keys is never a side effect of removing a
# package. Delete them by hand once nothing needs them.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
