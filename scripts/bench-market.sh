#!/usr/bin/env bash
# The marketplace benchmark: DescribeImages MARKET_IMAGE over LISTINGS listings (default 10000)
# against the PUBLIC_IMAGE page, and a month's bills for ACCOUNTS accounts (default 1000)
# against reading their segments unpriced. Not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imaged --bins
./target/release/imaged-bench-market "${1:-10000}" "${2:-1000}"
