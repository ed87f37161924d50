#!/usr/bin/env bash
# The Debian programs the tests drive for real: Prometheus (scrapes Vigil's /metrics), Alertmanager (receives
# Vigil's notifications), node_exporter (the Prometheus scrape source), Chromium (the console's browser
# tests, through Playwright's executablePath) and curl (the Collector's health check). Installs whichever is missing, once; does nothing when all are there.
set -euo pipefail
want=(
  "/usr/bin/prometheus:prometheus"
  "/usr/bin/prometheus-alertmanager:prometheus-alertmanager"
  "/usr/bin/prometheus-node-exporter:prometheus-node-exporter"
  "/usr/bin/chromium:chromium"
  "/usr/bin/curl:curl"
)
missing=()
for pair in "${want[@]}"; do
  [ -x "${pair%%:*}" ] || missing+=("${pair##*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${missing[*]} and no apt-get here: install them by hand (Debian packages)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "system-deps: installing ${missing[*]} (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
# the packages start services on install where an init system runs; the tests start their own instances
for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
  $sudo systemctl stop "$svc" >/dev/null 2>&1 || $sudo service "$svc" stop >/dev/null 2>&1 || true
done
