#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# The network-lab tests need root and iproute2 (`ip netns`); they fail loudly without them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Unit tests, then the integration tests last (examples are built by clippy above).
cargo test --lib --bins --tests
