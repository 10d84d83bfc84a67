#!/usr/bin/env bash
# Install omero-iscc on an OMERO server host: the static worker binary, the helper package in
# the server's Python, the OMERO.scripts, and optionally a cron entry or systemd timer that
# runs the scheduler. Run it as the user who owns OMERO.server, or as root.
#
#   ./install.sh [options]
#
# Options:
#   --prefix DIR          where the worker goes: DIR/bin/omero-iscc (default /usr/local)
#   --binary PATH         install this prebuilt worker instead of building one
#   --omero-dir DIR       the OMERO.server directory (default: $OMERODIR, else found from `omero`)
#   --python PATH         the OMERO server's Python (default: next to `omero`, else
#                         DIR/../venv3/bin/python)
#   --upload              upload the scripts as iscc/NAME.py (`omero script upload --official`,
#                         or `omero script replace` when already there) through the existing
#                         `omero login` session, instead of copying them into
#                         OMERO.server/lib/scripts/iscc/
#   --schedule "CRON"     run the scheduler with --once on this cron schedule (e.g. "*/5 * * * *")
#   --systemd             a systemd service and timer instead of cron (--on-calendar SPEC,
#                         default "*:0/5")
#   --user NAME           the user the scheduler runs as and who owns the configuration
#                         (default: owner of the OMERO.server directory, else the current user)
#   --config-dir DIR      configuration directory (default /etc/omero-iscc)
#   --cron-dir DIR        cron.d directory (default /etc/cron.d)
#   --systemd-dir DIR     unit directory (default /etc/systemd/system)
#   --dry-run             print every step, change nothing
#   --uninstall           remove what this script installed (never an annotation)
#   -h, --help            this text
#
# Running it twice changes nothing the second time.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=/usr/local binary="" omero_dir="${OMERODIR:-}" python="" upload=0 schedule="" systemd=0
on_calendar="*:0/5" user="" config_dir=/etc/omero-iscc cron_dir=/etc/cron.d systemd_dir=/etc/systemd/system
dry_run=0 uninstall=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 2; }

# Installs the Python distribution (helper package, `python -m omero_iscc`, the `omero iscc`
# plugin) into the server's environment with pip, offline: the wheel is built by
# omero_scripts/make_wheel.py with the standard library alone (a server's Python often has no
# build tools) and installed with --no-index --no-deps (omero-py is there already). The same
# version already installed is left as it is, so a second run changes nothing.
install_helper() {
    local have wheels
    have=$("$python" -m pip show omero-iscc 2>/dev/null | sed -n 's/^Version: //p' || true)
    if [ "$have" = "$version" ]; then
        step "helper package omero-iscc $version already in $site"
        return
    fi
    step "helper package and CLI plugin (omero-iscc $version) into $site with pip, offline"
    if [ "$dry_run" = 1 ]; then
        echo "    would run: pip install --no-index --no-deps omero_iscc-$version-py3-none-any.whl"
        return
    fi
    wheels=$(mktemp -d)
    "$python" "$here/omero_scripts/make_wheel.py" "$wheels" >/dev/null || die "cannot build the omero-iscc wheel"
    "$python" -m pip install --quiet --no-index --no-deps "$wheels"/omero_iscc-*.whl ||
        die "pip could not install the omero-iscc wheel into $python's environment"
    rm -rf "$wheels"
}

# Uploads the scripts as iscc/NAME.py through the administrator's existing `omero login`
# session: `omero script upload` stores a script at the path given relative to the current
# directory, so it runs from a staging folder holding iscc/; a script already there is
# replaced in place (`omero script replace ID`), so a second run changes the scripts, not
# their ids.
upload_scripts() {
    local cli staging f name id
    cli="$(dirname "$python")/omero"
    step "uploading the scripts as iscc/ISCC_*.py with $cli"
    if [ "$dry_run" = 0 ] && ! "$cli" sessions key >/dev/null 2>&1; then
        die "no OMERO session to upload with: run '$cli login' as an administrator first (the upload uses that session), then run install.sh again"
    fi
    staging=$(mktemp -d)
    mkdir "$staging/iscc"
    cp "$here"/omero_scripts/ISCC_*.py "$staging/iscc/"
    for f in "$staging"/iscc/ISCC_*.py; do
        name="iscc/$(basename "$f")"
        id=""
        [ "$dry_run" = 1 ] || id=$("$cli" script list --official 2>/dev/null |
            awk -F'|' -v n="$name" '{p=$2; gsub(/^ +| +$/, "", p); i=$1; gsub(/ /, "", i)} p == n {print i; exit}')
        if [ -n "$id" ]; then
            run "$cli" script replace "$id" "$f"
        else
            (cd "$staging" && run "$cli" script upload --official "$name")
        fi
    done
    rm -rf "$staging"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?}; shift ;;
        --binary) binary=${2:?}; shift ;;
        --omero-dir) omero_dir=${2:?}; shift ;;
        --python) python=${2:?}; shift ;;
        --upload) upload=1 ;;
        --schedule) schedule=${2:?}; shift ;;
        --systemd) systemd=1 ;;
        --on-calendar) on_calendar=${2:?}; shift ;;
        --user) user=${2:?}; shift ;;
        --config-dir) config_dir=${2:?}; shift ;;
        --cron-dir) cron_dir=${2:?}; shift ;;
        --systemd-dir) systemd_dir=${2:?}; shift ;;
        --dry-run) dry_run=1 ;;
        --uninstall) uninstall=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

step() { echo "==> $*"; }
# run CMD...: runs it, or only prints it with --dry-run.
run() { if [ "$dry_run" = 1 ]; then echo "    would run: $*"; else "$@"; fi; }
# put SRC DEST MODE: installs a file unless an identical one is there.
put() {
    if [ -f "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "$3" ]; then
        echo "    unchanged: $2"
    else
        echo "    install: $2"
        run mkdir -p "$(dirname "$2")"
        run install -m "$3" "$1" "$2"
    fi
}
# put_text DEST MODE TEXT: like put, for generated content.
put_text() {
    local tmp; tmp=$(mktemp); printf '%s' "$3" > "$tmp"
    put "$tmp" "$1" "$2"; rm -f "$tmp"
}
remove() {
    if [ -e "$1" ] || [ -L "$1" ]; then echo "    remove: $1"; run rm -rf "$1"; else echo "    absent: $1"; fi
}

# --- where things are -----------------------------------------------------------------------
if [ -z "$omero_dir" ] && command -v omero >/dev/null 2>&1; then
    omero_cli=$(command -v omero)
    guess=$(cd "$(dirname "$omero_cli")/.." && pwd)
    for d in "$guess/OMERO.server" "$guess/../OMERO.server" "$guess"; do
        if [ -d "$d/lib/scripts" ]; then omero_dir=$(cd "$d" && pwd); break; fi
    done
    [ -n "$python" ] || python="$(dirname "$omero_cli")/python"
fi
if [ -n "$omero_dir" ]; then
    [ -d "$omero_dir/lib/scripts" ] || die "$omero_dir does not look like OMERO.server (no lib/scripts)"
    if [ -z "$python" ]; then
        for p in "$omero_dir/../venv3/bin/python" "$omero_dir/../venv/bin/python"; do
            if [ -x "$p" ]; then python=$p; break; fi
        done
    fi
    [ -n "$python" ] && [ -x "$python" ] || die "cannot find the OMERO server's Python: use --python"
fi
if [ -n "$python" ]; then
    # The helper runs inside the server's Python: 3.9 is the floor (Rocky/RHEL 9's Python).
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
        die "$python is Python $("$python" -c 'import platform; print(platform.python_version())' 2>/dev/null): omero-iscc needs Python 3.9 or newer in the OMERO server's environment"
fi
if [ -z "$user" ]; then
    if [ -n "$omero_dir" ]; then user=$(stat -c %U "$omero_dir"); else user=$(id -un); fi
fi
version=$(sed -n 's/^version = "\(.*\)".*/\1/p' "$here/omero_scripts/pyproject.toml" | head -n1)
site=""
[ -n "$python" ] && site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
worker_bin="$prefix/bin/omero-iscc"
server_worker=""
[ -n "$python" ] && server_worker="$(dirname "$python")/omero-iscc"
scripts_dir=""
[ -n "$omero_dir" ] && scripts_dir="$omero_dir/lib/scripts/iscc"
cron_file="$cron_dir/omero-iscc"
config="$config_dir/config.json"

# --- uninstall ------------------------------------------------------------------------------
if [ "$uninstall" = 1 ]; then
    step "removing omero-iscc (annotations stay on the server)"
    remove "$worker_bin"
    [ -n "$server_worker" ] && remove "$server_worker"
    if [ -n "$python" ] && "$python" -m pip show --quiet omero-iscc >/dev/null 2>&1; then
        run "$python" -m pip uninstall --quiet --yes omero-iscc
    fi
    [ -n "$site" ] && remove "$site/omero_iscc"  # a copy made by an earlier install.sh
    [ -n "$scripts_dir" ] && remove "$scripts_dir"
    remove "$cron_file"
    remove "$systemd_dir/omero-iscc.service"
    remove "$systemd_dir/omero-iscc.timer"
    remove "$config_dir"
    exit 0
fi

# --- 1. the worker --------------------------------------------------------------------------
step "worker binary"
if [ -z "$binary" ]; then
    command -v cargo >/dev/null || die "cargo not found: install Rust, or pass --binary PATH"
    run cargo build --release --locked --manifest-path "$here/Cargo.toml"
    binary="$here/target/x86_64-unknown-linux-gnu/release/omero-iscc"
fi
if [ "$dry_run" = 0 ] || [ -x "$binary" ]; then
    [ -x "$binary" ] || die "no worker binary at $binary"
    "$binary" selftest >/dev/null || die "$binary selftest failed: run it to see which vector"
    echo "    selftest passed: $binary"
    if ldd "$binary" 2>&1 | grep -q "=>"; then
        echo "    warning: $binary is dynamically linked; it may not run on other hosts" >&2
    fi
fi

# --- 2. the CLI -----------------------------------------------------------------------------
step "installing the worker to $worker_bin"
put "$binary" "$worker_bin" 755

# --- 3. the OMERO server parts --------------------------------------------------------------
if [ -z "$omero_dir" ]; then
    step "no OMERO.server found (--omero-dir, OMERODIR or omero on PATH): installed the CLI only;"
    echo "    skipped: helper package, scripts, scheduler"
else
    step "worker next to the server's Python: $server_worker"
    put "$binary" "$server_worker" 755
    install_helper
    if [ "$upload" = 1 ]; then
        upload_scripts
    else
        step "scripts into $scripts_dir"
        for f in "$here"/omero_scripts/ISCC_*.py; do
            put "$f" "$scripts_dir/$(basename "$f")" 644
        done
    fi
fi

# --- 4. scheduling --------------------------------------------------------------------------
if [ -n "$schedule" ] || [ "$systemd" = 1 ]; then
    [ -n "$python" ] || die "scheduling needs the OMERO server's Python (--omero-dir or --python)"
    command_line="$python -m omero_iscc --config $config run --once"
    if [ "$systemd" = 1 ]; then
        step "systemd service and timer in $systemd_dir"
        put_text "$systemd_dir/omero-iscc.service" 644 "[Unit]
Description=omero-iscc: annotate new OMERO images with their ISCC
After=network-online.target

[Service]
Type=oneshot
User=$user
ExecStart=$command_line
# SIGTERM goes to the scheduler only: it finishes the image in hand and exits 0.
KillMode=mixed
TimeoutStopSec=15min
"
        put_text "$systemd_dir/omero-iscc.timer" 644 "[Unit]
Description=Run omero-iscc periodically

[Timer]
OnCalendar=$on_calendar
Persistent=true

[Install]
WantedBy=timers.target
"
        if [ "$systemd_dir" = /etc/systemd/system ] && command -v systemctl >/dev/null; then
            run systemctl daemon-reload
            run systemctl enable --now omero-iscc.timer
        fi
    else
        step "cron entry $cron_file"
        put_text "$cron_file" 644 "# omero-iscc scheduler (installed by install.sh)
$schedule $user $command_line >/dev/null 2>&1
"
    fi
    step "configuration $config"
    if [ -e "$config" ]; then
        echo "    kept: $config (exists)"
    else
        echo "    create: $config (mode 0600, owner $user): edit host and credentials"
        run mkdir -p "$config_dir"
        if [ "$dry_run" = 0 ]; then
            umask 077
            cat > "$config" <<JSON
{
  "host": "localhost",
  "port": 4064,
  "username": "root",
  "password": "omero",
  "batch_size": 100,
  "worker": "$server_worker"
}
JSON
            chmod 600 "$config"
            [ "$(id -u)" = 0 ] && chown "$user" "$config"
        fi
    fi
fi
step "done"
