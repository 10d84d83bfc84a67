#!/usr/bin/env bash
# The one test command: installs what the tests need (cached per user, outside the checkout)
# and runs every test of the project: the Rust unit and integration tests (which compare
# against iscc-sum and iscc-core on real files), then the Python tests of the OMERO scripts,
# the helper package, the scheduler and install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/setup/env.sh

echo "== cargo test (release build of the static binary first)"
cargo build --release --locked
cargo test --release --locked

echo "== pytest"
export OMERO_ISCC_WORKER="$PWD/target/x86_64-unknown-linux-gnu/release/omero-iscc"
# Ice 3.6 imports the deprecated imp module; that warning is not ours.
"$OMERO_ISCC_PYTHON" -m pytest -q -W "ignore:the imp module is deprecated:DeprecationWarning" tests/python "$@"
