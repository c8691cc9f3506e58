#!/bin/sh
# The keyward service runs as its own system user, never as root.
set -e
if ! getent group keyward >/dev/null 2>&1; then
	groupadd --system keyward
fi
if ! getent passwd keyward >/dev/null 2>&1; then
	useradd --system --gid keyward --home-dir /var/lib/keyward --no-create-home \
		--shell /usr/sbin/nologin --comment "Keyward recovery key escrow" keyward
fi
