#!/usr/bin/env bash
# System packages stackpep's tests, testbed and benchmarks use (Debian/Ubuntu, as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# tshark asks whether non-root users may capture; answer once, non-interactively.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections || true
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    gcc python3-dev python3-venv \
    iproute2 iptables nftables iputils-ping ethtool procps psmisc kmod \
    tcpdump tshark iperf3 curl nginx-light >/dev/null
echo "system packages installed"
