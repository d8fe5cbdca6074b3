#!/usr/bin/env bash
# The cross-region copy benchmark: a SIZE GiB image (default 4) copied to an empty region against
# cp of the same blocks, then a derived image (1% changed) copied to a region holding its base.
# Not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imaged --bins
./target/release/imaged-bench-sync "${1:-4}"
