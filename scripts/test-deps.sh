#!/usr/bin/env bash
# Test-only system packages: Debian's Chromium (browser end-to-end tests) and a CJK font for its
# screenshots. Installed when running as root (CI, a fresh dev machine); otherwise those tests skip.
set -u
have_font() { ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1; }
if command -v chromium >/dev/null 2>&1 && have_font; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian chromium and fonts-noto-cjk for the browser tests…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null) \
    || echo "chromium could not be installed; browser tests will be skipped"
else
  echo "chromium not found and not root: browser tests will be skipped"
fi
exit 0
