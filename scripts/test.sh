#!/usr/bin/env bash
# The whole test suite, as README.md documents it: unit, property and
# end-to-end tests (real processes on loopback, port 0), the status page in
# headless Chromium, the ring buffer under loom and Miri. Installs Debian's
# chromium and chromium-driver (as root) and the nightly Miri component if
# it can.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== chromium and chromedriver for tests/browser.rs (the status page in a real browser)"
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "already installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; } \
        || echo "chromium could not be installed: tests/browser.rs will say SKIPPED"
else
    echo "not root or no apt-get: install chromium and chromium-driver yourself, or tests/browser.rs says SKIPPED"
fi

echo "== cargo test (unit + end-to-end)"
cargo test --release --workspace

echo "== benchmarks, smoke only (each runs once; speed is never asserted)"
cargo bench -p rrstore --benches -- --test

echo "== partitions across network namespaces (short run; skips without root and ip netns)"
DURATION=10 CUT_AT=2 CUT_FOR=4 RATE=1000 bash scripts/netns-partition.sh
MODE=peers DURATION=10 CUT_AT=2 CUT_FOR=4 RATE=1000 bash scripts/netns-partition.sh

echo "== loom model of the SPSC ring buffer"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --test loom_ringbuf

echo "== Miri on the SPSC ring buffer"
bash .ci/miri.sh
