#!/bin/sh
# Print what a run could change on a host: packages, files under the places
# the roles write (with mode, owner, size and mtime), users and unit files.
# Two equal prints mean the run between them changed nothing.
set -eu
dpkg-query -W -f '${Package} ${Version} ${Status}\n'
find /etc /opt /usr/local /srv /var/lib/apt/lists /var/lib/flower /var/log/flower /var/backups \
  -xdev -printf '%p %m %u %g %s %T@\n' 2>/dev/null | sort
systemctl list-unit-files --no-legend --no-pager | sort
systemctl list-units --type=service,socket,timer --state=running,listening,waiting --no-legend --no-pager \
  | awk '{print $1}' | sort
