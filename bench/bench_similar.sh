#!/usr/bin/env bash
# Times `omero-iscc similar` at scale: 1,000,000 codes with the default threshold (target: at
# most 60 s on 2 cores) and 10,000,000 codes for identical groups only (target: at most 30 s),
# with peak memory. Inputs are synthetic records from examples/gen_codes.rs, cached.
#   bench/bench_similar.sh [N_NEAR=1000000] [N_EXACT=10000000]
set -euo pipefail
cd "$(dirname "$0")/.."
near=${1:-1000000} exact=${2:-10000000}
cache=${OMERO_ISCC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omero-iscc}/bench
mkdir -p "$cache"
cargo build --release --quiet --example gen_codes
gen=target/x86_64-unknown-linux-gnu/release/examples/gen_codes
bin=target/x86_64-unknown-linux-gnu/release/omero-iscc
for n in "$near" "$exact"; do
    [ -s "$cache/codes-$n.jsonl" ] || "$gen" "$n" > "$cache/codes-$n.jsonl"
done
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "| run | codes | wall | peak RSS | groups |"
echo "|---|---:|---:|---:|---|"
for spec in "near:$near:" "exact:$exact:--exact"; do
    IFS=: read -r name n flag <<<"$spec"
    /usr/bin/time -f "%e %M" -o "$cache/time.txt" "$bin" similar --json $flag "$cache/codes-$n.jsonl" \
        > "$cache/groups.jsonl" 2> "$cache/similar.err"
    read -r secs kib < "$cache/time.txt"
    echo "| similar ${flag:-(threshold 12)} | $n | ${secs} s | $((kib / 1024)) MiB | $(tail -n1 "$cache/similar.err" | sed 's/^omero-iscc: //') |"
done
