#!/usr/bin/env bash
# Installs Debian's chromium when it is missing: tests/test_book.py opens the built book in headless Chromium.
# A browser cannot be downloaded by its own installer here; the Debian package is the way in. Recommends are
# skipped (printing, notifications), but fonts-liberation is kept so that screenshots show readable text.
set -euo pipefail
command -v chromium >/dev/null && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
command -v chromium
