#!/usr/bin/env bash
# Runs every test (ava over TAP) and ends with the closing line CI reads:
# "N passed, N failed" (", N skipped" when some were), keeping ava's exit code.
set -uo pipefail
cd "$(dirname "$0")/.."
# The foreign clients of the tests (openssl, chromium, python3-websockets) are Debian
# packages: installed when missing (as root), else this stops and names the command.
bash scripts/install-system-deps.sh || exit 1
npm run build --silent || exit 1
tap=$(mktemp)
npx ava --tap "$@" | tee "$tap"
status=${PIPESTATUS[0]}
# The whole suite (no arguments) runs tcp gateways on the native data plane (the default);
# the tcpd test files run again with the JS switch (--data-plane js, and what carries every
# connection when the addon could not be built), counted in the same closing line.
if [ "$#" -eq 0 ]; then
  echo "# the tcpd test files again with LIBIPC_DATA_PLANE=js"
  LIBIPC_DATA_PLANE=js npx ava --tap test/tcpd.test.ts 'test/hostile-tcpd*.test.ts' 'test/regressions-issue8*.test.ts' \
    test/vectors.test.ts test/gatewayd.test.ts test/admin.test.ts | tee -a "$tap"
  js=${PIPESTATUS[0]}
  if [ "$status" -eq 0 ]; then status=$js; fi
fi
pass=$(grep -cE '^ok ' "$tap" || true)
skip=$(grep -cE '^ok .*# SKIP' "$tap" || true)
# ava marks todo tests 'not ok ... # TODO': they are not failures.
todo=$(grep -cE '^not ok .*# TODO$' "$tap" || true)
fail=$(grep -E '^not ok ' "$tap" | grep -vcE '# TODO$' || true)
rm -f "$tap"
pass=$((pass - skip))
skip=$((skip + todo))
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
if [ "$skip" -gt 0 ]; then echo "$pass passed, $fail failed, $skip skipped"; else echo "$pass passed, $fail failed"; fi
exit "$status"
