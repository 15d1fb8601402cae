#!/usr/bin/env bash
# Debian packages the test-suite uses: munge + slurm (tests/slurm starts a real
# single-node cluster) and chromium (tests/tracking drives the MLflow UI with
# Playwright). Needs root; skips what is already installed.
set -euo pipefail
PKGS=(munge slurmctld slurmd slurm-client chromium)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages: all present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system packages missing (${missing[*]}); run as root: apt-get install ${missing[*]}" >&2
    exit 0   # the tests that need them skip with this reason
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
