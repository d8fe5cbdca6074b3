#!/usr/bin/env bash
# The image-bytes benchmark: a SIZE GiB image (default 4), half random and half zeros, as raw and
# qcow2; import throughput against cat and qemu-img convert, dedup, memory, export. Not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imaged --bins
./target/release/imaged-bench-import "${1:-4}"
