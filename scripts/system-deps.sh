#!/usr/bin/env bash
# Run-time system packages the product uses when present: antiword reads legacy Word .doc / .wps files
# (LibreOffice, which also converts .et / .dps, is larger: see README). Installed by `make install` when
# running as root with apt (a fresh server, CI); otherwise it says what to install and goes on: those
# files are then skipped with the reason.
set -u
if command -v antiword >/dev/null 2>&1 || command -v soffice >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing antiword (legacy .doc files)…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq antiword >/dev/null) \
    || echo "antiword could not be installed: legacy .doc files will be skipped with the reason"
else
  echo "antiword not found and not root: run 'sudo apt-get install antiword' to index legacy .doc files"
fi
exit 0
