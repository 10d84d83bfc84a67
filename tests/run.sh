#!/usr/bin/env bash
# The one test command: installs what the tests need (cached per user, outside the checkout)
# and runs every check of the project:
#   1. the linters: cargo fmt, clippy (warnings are errors), unused dependencies, ruff (lint
#      and format) and vermin (everything that runs in the OMERO server's Python imports on 3.9);
#   2. the Rust unit and integration tests (which compare against iscc-sum, iscc-core and
#      pathspec on real files);
#   3. the platform wheel, built by maturin offline (bindings = bin: the static worker inside);
#   4. the Python tests of the OMERO scripts, the helper package, the scheduler, install.sh and
#      the wheel (installed into fresh environments with no Rust on PATH), on Python 3.11 with
#      omero-py 5.23 and on Python 3.9 with omero-py 5.21.3, against the stand-in OMERO server
#      on the wire (tests/standin/); the live suite (tests/python/test_live_omero.py) runs
#      against it too, or against the server that OMERO_ISCC_TEST_HOST names (docs/testing.md).
# A lint failure fails the run like a test. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/setup/env.sh
source tests/setup/tools.sh
source tests/setup/slurm.sh
source tests/setup/wheel.sh

echo "== lint"
cargo fmt --check
cargo clippy --release --locked --all-targets --quiet -- -D warnings
cargo machete
"$OMERO_ISCC_PYTHON" -m ruff check --config tests/ruff.toml omero_scripts tests/python tests/standin tests/reference tests/setup bench
"$OMERO_ISCC_PYTHON" -m ruff format --config tests/ruff.toml --check omero_scripts tests/python tests/standin tests/reference tests/setup bench
# The server-side code (scripts, helper, scheduler) must not need more than Python 3.9.
"$(dirname "$OMERO_ISCC_PYTHON")/vermin" --no-tips --violations -t=3.9- --eval-annotations omero_scripts

echo "== cargo test (release build of the static binary first)"
cargo build --release --locked
cargo test --release --locked

echo "== the platform wheel (maturin, offline)"
rm -rf target/wheels
"$OMERO_ISCC_WHEEL_TOOLS/bin/maturin" build --release --locked --offline --quiet --out target/wheels
OMERO_ISCC_WHEEL=$(ls "$PWD"/target/wheels/omero_iscc-*.whl)
export OMERO_ISCC_WHEEL

export OMERO_ISCC_WORKER="$PWD/target/x86_64-unknown-linux-gnu/release/omero-iscc"
# Ice 3.6 imports the deprecated imp module; that warning is not ours.
pytest_args=(-q -W "ignore:the imp module is deprecated:DeprecationWarning" -p no:cacheprovider)
echo "== pytest, Python $("$OMERO_ISCC_PYTHON" -c 'import platform; print(platform.python_version())'), omero-py 5.23"
"$OMERO_ISCC_PYTHON" -m pytest "${pytest_args[@]}" tests/python "$@"
echo "== pytest, Python $("$OMERO_ISCC_PYTHON39" -c 'import platform; print(platform.python_version())'), omero-py 5.21.3"
"$OMERO_ISCC_PYTHON39" -m pytest "${pytest_args[@]}" tests/python "$@"
