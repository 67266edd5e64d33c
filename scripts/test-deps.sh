#!/usr/bin/env bash
# Test-only system packages: Debian's Chromium (browser end-to-end tests) and a CJK font for its
# screenshots; antiword comes with `make install` (scripts/system-deps.sh), checked again here for a venv
# made before it did. Installed when running as root (CI, a fresh dev machine); otherwise those tests skip.
set -u
have_font() { ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1; }
if command -v chromium >/dev/null 2>&1 && have_font && command -v antiword >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian chromium, fonts-noto-cjk and antiword for the tests…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk antiword >/dev/null) \
    || echo "chromium / antiword could not be installed; the tests that need them will be skipped"
else
  echo "chromium or antiword not found and not root: the tests that need them will be skipped"
fi
exit 0
