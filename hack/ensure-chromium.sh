#!/usr/bin/env bash
# Installs Debian's chromium for the page's browser tests (test/e2e drives
# /usr/bin/chromium with chromedp). Test tools' own browser downloads are not
# reachable from this kind of machine; Debian's package is.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
	exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y chromium
