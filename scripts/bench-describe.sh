#!/usr/bin/env bash
# The DescribeImages benchmark: 100,000 images over 1,000 accounts, 8 clients, 20 s.
# SQLite always; PostgreSQL too when IMAGED_TEST_PG_URL is set. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imaged --bins
./target/release/imaged-bench --backend sqlite "$@"
if [ -n "${IMAGED_TEST_PG_URL:-}" ]; then
  ./target/release/imaged-bench --backend postgres "$@"
else
  echo "IMAGED_TEST_PG_URL is not set: skipping the PostgreSQL run"
fi
# Several servers on one PostgreSQL (the clients spread over them): IMAGED_BENCH_SERVERS=3.
if [ -n "${IMAGED_TEST_PG_URL:-}" ] && [ -n "${IMAGED_BENCH_SERVERS:-}" ]; then
  ./target/release/imaged-bench --backend postgres --servers "$IMAGED_BENCH_SERVERS" "$@"
fi
