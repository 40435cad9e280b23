#!/usr/bin/env bash
# Headless Chromium from Debian's packages for the search page's browser test (tests/test_search_web.py).
# Idempotent: does nothing when /usr/bin/chromium exists. Playwright (a dev dependency) drives this system
# browser; `playwright install` (which downloads its own browser build) is never used.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_browser: no apt-get here; install Chromium so that /usr/bin/chromium exists" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "setup_browser: installing chromium and chromium-driver (Debian packages)"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver
