#!/usr/bin/env bash
# The instances benchmark: a SIZE GiB image (default 4) imported, 100 instances launched from it,
# 1% of one disk changed, then captured; seconds and new bytes against the full import. Not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imaged --bins
./target/release/imaged-bench-instances "${1:-4}"
