#!/usr/bin/env bash
# The TKE benchmark: a node pool scaled from 0 to 50 nodes against a plain RunInstances of 50 in
# the same run (time, storage added), then DescribeClusterInstances on a 1,000-node cluster
# (p50/p99) against CVM DescribeInstances over the same instances. Not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imaged --bins
./target/release/imaged-bench-tke
