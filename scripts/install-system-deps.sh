#!/usr/bin/env bash
# System packages the tests and benchmarks use (Debian): openssl for a real TLS client,
# chromium for the WebSocket page test, python3-websockets (for Debian's /usr/bin/python3)
# as a second WebSocket
# client, gcc/make/libssl-dev for ../shared/tools/ipcbench, haproxy (a real load balancer
# in front of the gateways, and the benchmark's anchor), prometheus for promtool (checks
# /metrics), systemd for systemd-socket-activate and systemd-notify, iproute2 for ss (bytes
# received per socket: the reload-under-load test). Skips what is present.
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v chromium >/dev/null || need+=(chromium)
/usr/bin/python3 -c 'import websockets' 2>/dev/null || need+=(python3-websockets)
command -v gcc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v promtool >/dev/null || need+=(prometheus)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v ss >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
