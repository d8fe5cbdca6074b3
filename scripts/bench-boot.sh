#!/usr/bin/env bash
# The real-boot benchmark: the tiny image booted through RunInstances (first console line,
# power-off) against the same guest started by hand, 20 guests at once (time, memory), and a
# capture of a running guest against a stopped one. IMAGED_ACCEL=kvm where KVM works. Not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-qemu
cargo build --release -p imaged --bins
./target/release/imaged-bench-boot
