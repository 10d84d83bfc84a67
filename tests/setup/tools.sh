# Sourced by tests/run.sh: the Rust tools the lint step uses, built once per user into the
# cache (cargo-machete: dependencies declared in Cargo.toml that no code uses).
_tools="$OMERO_ISCC_CACHE/cargo-tools"
if [ ! -x "$_tools/bin/cargo-machete" ]; then
    echo "tests/setup: building cargo-machete into $_tools (once)" >&2
    cargo install --quiet --locked cargo-machete --version 0.7.0 --root "$_tools" ||
        { echo "tests/setup: cannot build cargo-machete" >&2; return 1; }
fi
export PATH="$_tools/bin:$PATH"
unset _tools
