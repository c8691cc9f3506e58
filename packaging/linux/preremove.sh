#!/bin/sh
# Stops the service when the package is removed, not when it is upgraded: dpkg calls
# "prerm remove" or "prerm upgrade VERSION", rpm "%preun 0" on removal and "%preun 1" on upgrade.
set -e
case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl disable --now keyward.service >/dev/null 2>&1 || true
fi
