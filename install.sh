#!/usr/bin/env bash
# Install omero-iscc on an OMERO server host: the omero-iscc wheel (the static worker, the
# helper package with the OMERO.scripts, the `omero iscc` CLI plugin) into the server's
# Python, the scripts where the server runs them, and optionally a cron entry or systemd
# timer that runs the scheduler.
#
#   ./install.sh [options]          as root, or as the account OMERO runs as
#
# Who runs what. Root writes only root's files: the worker copy in --prefix, the cron entry
# or systemd units, the configuration, state and log directories, and the manifest.
# Everything that runs the server's Python, pip or `omero` runs as the OMERO account
# (--user), never as root, dry run included. The worker is built as the checkout's owner,
# never as root (or not at all: --wheel, --binary). The scheduler never runs as root, and is
# never scheduled through a Python or worker that anyone but root and its own account may
# change. Everything is checked before anything is changed: a run that cannot finish changes
# nothing, and --dry-run says what it would do.
#
# Options:
#   --wheel FILE          install this omero-iscc platform wheel (built with `maturin build`
#                         elsewhere): no Rust on this host
#   --binary PATH         package this prebuilt static worker into the wheel (no Rust here)
#                         (neither: the worker is built from this checkout with cargo)
#   --omero-dir DIR       the OMERO.server directory (default: $OMERODIR, else found from
#                         `omero` on PATH)
#   --python PATH         the OMERO server's Python (default: next to `omero`, else
#                         DIR/../venv3/bin/python)
#   --user NAME           the account OMERO runs as: it runs pip, `omero` and the scheduler,
#                         and owns the configuration (default: the owner of the OMERO.server
#                         directory, links resolved; root is refused)
#   --upload              upload the scripts as iscc/NAME.py through that account's
#                         `omero login` session, instead of copying them into
#                         OMERO.server/lib/scripts/iscc/
#   --prefix DIR          also put the worker in DIR/bin/omero-iscc, for people (default as
#                         root: /usr/local; otherwise none)
#   --schedule "CRON"     run the scheduler with --once on this cron schedule ("*/5 * * * *")
#   --systemd             a hardened systemd service and timer instead of cron
#   --on-calendar SPEC    the timer's OnCalendar (default "*:0/5")
#   --config-dir DIR      configuration and install manifest (default /etc/omero-iscc)
#   --state-dir DIR       the scheduler's state (default /var/lib/omero-iscc)
#   --log-dir DIR         the cron runs' log, rotated weekly (default /var/log/omero-iscc;
#                         systemd runs log to the journal)
#   --cron-dir DIR        cron.d directory (default /etc/cron.d)
#   --systemd-dir DIR     unit directory (default /etc/systemd/system)
#   --logrotate-dir DIR   logrotate.d directory (default /etc/logrotate.d)
#   --dry-run             check everything, print every step, change nothing
#   --uninstall           remove what install.sh installed, from its manifest (never an
#                         annotation); the configuration stays unless --purge
#   --purge               with --uninstall: remove the configuration too
#   -h, --help            this text
#
# Running it twice changes nothing the second time.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wheel="" binary="" omero_dir="${OMERODIR:-}" python="" user="" upload=0 prefix="" schedule="" systemd=0
on_calendar="*:0/5" config_dir=/etc/omero-iscc state_dir=/var/lib/omero-iscc log_dir=/var/log/omero-iscc
cron_dir=/etc/cron.d systemd_dir=/etc/systemd/system logrotate_dir=/etc/logrotate.d
dry_run=0 uninstall=0 purge=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 2; }
step() { echo "==> $*"; }
note() { echo "    $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) wheel=${2:?}; shift ;;
        --binary) binary=${2:?}; shift ;;
        --omero-dir) omero_dir=${2:?}; shift ;;
        --python) python=${2:?}; shift ;;
        --user) user=${2:?}; shift ;;
        --upload) upload=1 ;;
        --prefix) prefix=${2:?}; shift ;;
        --schedule) schedule=${2:?}; shift ;;
        --systemd) systemd=1 ;;
        --on-calendar) on_calendar=${2:?}; shift ;;
        --config-dir) config_dir=${2:?}; shift ;;
        --state-dir) state_dir=${2:?}; shift ;;
        --log-dir) log_dir=${2:?}; shift ;;
        --cron-dir) cron_dir=${2:?}; shift ;;
        --systemd-dir) systemd_dir=${2:?}; shift ;;
        --logrotate-dir) logrotate_dir=${2:?}; shift ;;
        --dry-run) dry_run=1 ;;
        --uninstall) uninstall=1 ;;
        --purge) purge=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

# --- values that end up in cron and systemd lines ---------------------------------------
# A path is written into a cron line (run by sh, where % is a newline) and an ExecStart= (where
# spaces split words and % is a specifier): only characters that mean nothing to either pass.
check_path() {
    case "$2" in
        /*) ;;
        *) die "$1: $2 is not an absolute path" ;;
    esac
    [[ "$2" =~ ^[A-Za-z0-9._/@+=:,~-]+$ ]] ||
        die "$1: $2 holds characters a cron line or a systemd unit would mangle (letters, digits and ._/@+=:,~- only)"
}
[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || die "--purge goes with --uninstall"
[ -z "$wheel" ] || [ -z "$binary" ] || die "--wheel and --binary exclude each other"
[ -n "$schedule" ] && [ "$systemd" = 1 ] && die "--schedule (cron) and --systemd exclude each other"
if [ -n "$schedule" ]; then
    # Five fields of digits, *, /, - and commas (or an @ shortcut): nothing that could end the
    # line or start another.
    [[ "$schedule" =~ ^(@(hourly|daily|weekly|monthly|yearly|annually|midnight)|[0-9*/,-]+( [0-9*/,-]+){4})$ ]] ||
        die "--schedule: '$schedule' is not a cron schedule (five fields such as \"*/5 * * * *\", or @hourly)"
fi
[[ "$on_calendar" =~ ^[A-Za-z0-9*:/.,~\ -]+$ ]] ||
    die "--on-calendar: '$on_calendar' is not a calendar specification (see systemd.time(7))"
if [ -n "$user" ]; then
    [[ "$user" =~ ^[a-z_][a-z0-9_.-]*[$]?$ ]] || die "--user: '$user' is not a user name"
fi
for opt in omero_dir python prefix config_dir state_dir log_dir cron_dir systemd_dir logrotate_dir; do
    [ -z "${!opt}" ] || check_path "--${opt//_/-}" "${!opt}"
done
for opt in wheel binary; do
    if [ -n "${!opt}" ]; then
        [ -f "${!opt}" ] || die "--$opt: no file at ${!opt}"
        printf -v "$opt" '%s' "$(cd "$(dirname "${!opt}")" && pwd)/$(basename "${!opt}")"
    fi
done
is_root=0
[ "$(id -u)" = 0 ] && is_root=1
dry=()
[ "$dry_run" = 0 ] || dry=(--dry-run)
[ -n "$prefix" ] || [ "$is_root" = 0 ] || prefix=/usr/local

# --- running things as the OMERO account ------------------------------------------------
# as_user CMD...: runs CMD as $user with a clean environment, from /, when this script runs
# as root; as is otherwise (then $user is this account). Never as root.
as_user() {
    if [ "$is_root" = 1 ]; then
        (cd / && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$user_home" USER="$user" LOGNAME="$user" \
            LANG=C.UTF-8 "$setpriv" --reuid="$uid" --regid="$gid" --init-groups -- "$@")
    else
        (cd / && "$@")
    fi
}
# run CMD...: runs it, or only prints it with --dry-run.
run() { if [ "$dry_run" = 1 ]; then echo "    would run: $*"; else "$@"; fi; }
run_as_user() { if [ "$dry_run" = 1 ]; then echo "    would run as $user: $*"; else as_user "$@"; fi; }

# unsafe_path PATH: prints the first directory or file on PATH (as written and with its links
# resolved) that an account other than root and $uid may write, or nothing. A sticky
# directory (/tmp) is safe above: others cannot rename or replace what they do not own.
unsafe_path() {
    local p resolved d owner mode
    resolved=$(readlink -f -- "$1" 2>/dev/null) || resolved=$1
    for p in "$1" "$resolved"; do
        d=$p
        while :; do
            if [ -e "$d" ]; then
                owner=$(stat -L -c %u -- "$d") mode=$((8#$(stat -L -c %a -- "$d")))
                if { [ "$owner" != 0 ] && [ "$owner" != "$uid" ]; } ||
                    { [ $((mode & 8#022)) != 0 ] && [ $((mode & 8#1000)) = 0 ]; }; then
                    echo "$d"
                    return
                fi
            fi
            [ "$d" = / ] && break
            d=$(dirname -- "$d")
        done
    done
}
# root_dir_problem DIR: with root, DIR (or the part of it that exists) and its parents must be
# root's alone, or root would create, write or chown files where another account can swap
# them for links. Prints what is wrong, or nothing.
root_dir_problem() {
    local d=$1 owner mode
    [ "$is_root" = 1 ] || return 0
    while :; do
        if [ -L "$d" ] || [ -e "$d" ]; then
            owner=$(stat -L -c %u -- "$d") mode=$((8#$(stat -L -c %a -- "$d")))
            if [ "$owner" != 0 ] || { [ $((mode & 8#022)) != 0 ] && [ $((mode & 8#1000)) = 0 ]; }; then
                echo "$d (owner uid $owner, mode $(stat -L -c %a -- "$d"))"
                return
            fi
            [ -L "$d" ] && { root_dir_problem "$(readlink -f -- "$d")"; return; }
        fi
        [ "$d" = / ] && return
        d=$(dirname -- "$d")
    done
}
# static_elf FILE: whether FILE is an x86-64 ELF executable without a program interpreter (it
# needs no dynamic loader). Reads bytes only: nothing of FILE runs.
static_elf() {
    local f=$1 phoff phentsize phnum i
    [ "$(od -An -tx1 -N6 -- "$f" | tr -d ' \n')" = 7f454c460201 ] || return 1
    [ "$(od -An -tu2 -j18 -N2 -- "$f" | tr -d ' ')" = 62 ] || return 1
    phoff=$(od -An -tu8 -j32 -N8 -- "$f" | tr -d ' ')
    phentsize=$(od -An -tu2 -j54 -N2 -- "$f" | tr -d ' ')
    phnum=$(od -An -tu2 -j56 -N2 -- "$f" | tr -d ' ')
    for ((i = 0; i < phnum; i++)); do
        [ "$(od -An -tu4 -j$((phoff + i * phentsize)) -N4 -- "$f" | tr -d ' ')" = 3 ] && return 1
    done
    return 0
}
sha() { sha256sum -- "$1" | cut -d' ' -f1; }

version=$(awk -F'"' '/^version = /{print $2; exit}' "$here/omero_scripts/pyproject.toml")
cron_file="$cron_dir/omero-iscc"
service="$systemd_dir/omero-iscc.service"
timer="$systemd_dir/omero-iscc.timer"
logrotate_file="$logrotate_dir/omero-iscc"
config="$config_dir/config.json"
manifest="$config_dir/install-manifest"
prefix_worker=""
[ -z "$prefix" ] || prefix_worker="$prefix/bin/omero-iscc"
setpriv=$(command -v setpriv 2>/dev/null || true)
[ "$is_root" = 0 ] || [ -n "$setpriv" ] || die "setpriv (util-linux) is needed to run pip and the scheduler's checks as the OMERO account"

# systemctl runs only for a unit directory that systemd reads (as systemd-analyze lists them).
systemd_reads_dir() {
    command -v systemctl >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 || return 1
    systemd-analyze unit-paths 2>/dev/null | grep -xF -- "$(readlink -f -- "$systemd_dir")" >/dev/null
}

# --- uninstall, from the manifest ---------------------------------------------------------
# Each line of the manifest names what a run installed: `file PATH SHA256`, `dir PATH`,
# `config PATH`, `unit PATH SHA256`, `pip PYTHON - USER`, `scripts-copy OMERO_DIR PYTHON USER`,
# `scripts-upload - PYTHON USER`. It alone says what goes: uninstalling looks for no server and
# trusts no option but --config-dir (the manifest is root's, in a directory only root may
# write). Uninstalling removes a file only while it is what was installed
# (an edited one is kept and named), a directory only when empty, and nothing else.
if [ "$uninstall" = 1 ]; then
    step "removing omero-iscc as recorded in $manifest (annotations stay on the server)"
    if [ ! -f "$manifest" ]; then
        note "no manifest at $manifest: nothing removed (pass the --config-dir of the install)"
        exit 1
    fi
    [ -z "$(root_dir_problem "$config_dir")" ] || die "$config_dir is not root's alone: $(root_dir_problem "$config_dir")"
    kept=0
    units=$(awk '$1 == "unit" {print $2}' "$manifest")
    if [ -n "$units" ] && systemd_reads_dir; then
        run systemctl disable --now omero-iscc.timer || true
        run systemctl stop omero-iscc.service || true
    fi
    # Scripts first (they need the package), then the package, then root's files, deepest first.
    while read -r kind path extra owner; do
        case "$kind" in
            scripts-copy|scripts-upload|pip)
                user=$owner uid=$(id -u -- "$owner") gid=$(id -g -- "$owner")
                user_home=$(getent passwd "$owner" | cut -d: -f6)
                [ "$uid" != 0 ] || die "the manifest names root for $kind: refusing"
                ;;
        esac
        case "$kind" in
            scripts-copy)
                as_user "$extra" -I -m omero_iscc scripts install --uninstall --omero-dir "$path" \
                    ${dry[@]+"${dry[@]}"} | sed 's/^/    /'
                [ "${PIPESTATUS[0]}" = 0 ] || kept=1 ;;
            scripts-upload)
                if ! as_user "$(dirname "$extra")/omero" sessions key >/dev/null 2>&1 </dev/null; then
                    note "kept: the uploaded scripts iscc/ISCC_*.py (no omero session of $owner to delete them with: log in as $owner, then run --uninstall again)"
                    kept=1
                    continue
                fi
                as_user "$(dirname "$extra")/omero" iscc scripts install --upload --uninstall \
                    ${dry[@]+"${dry[@]}"} </dev/null | sed 's/^/    /'
                [ "${PIPESTATUS[0]}" = 0 ] || kept=1 ;;
            pip)
                note "pip uninstall omero-iscc from $path's environment, as $owner"
                run_as_user "$path" -I -m pip uninstall --quiet --no-cache-dir --yes omero-iscc || kept=1 ;;
        esac
    done < <(grep -E '^(scripts-copy|scripts-upload|pip) ' "$manifest" | tac | awk '{print $1, $2, $3, $4}')
    while read -r kind path extra; do
        case "$kind" in
            file|unit)
                if [ -L "$path" ] || { [ -e "$path" ] && [ "$(sha "$path")" != "$extra" ]; }; then
                    note "kept: $path (changed since it was installed)"; kept=1
                elif [ -e "$path" ]; then
                    note "remove: $path"; run rm -f -- "$path"
                else
                    note "absent: $path"
                fi ;;
            config)
                if [ "$purge" = 1 ] && { [ -e "$path" ] || [ -L "$path" ]; }; then
                    note "remove: $path (--purge)"; run rm -f -- "$path"
                elif [ -e "$path" ]; then
                    note "kept: $path (the configuration; --purge removes it)"
                fi ;;
            dir)
                if [ -d "$path" ] && [ ! -L "$path" ]; then
                    if [ -z "$(ls -A -- "$path")" ] || { [ "$dry_run" = 1 ] && [ "$path" != "$config_dir" ]; }; then
                        note "remove: $path/"; run rmdir -- "$path" || kept=1
                    elif [ "$path" != "$config_dir" ]; then
                        note "kept: $path/ (not empty: $(ls -A -- "$path" | sed -n '1,5p' | tr '\n' ' '))"
                    fi
                fi ;;
        esac
    done < <(grep -E '^(file|unit|config|dir) ' "$manifest" | tac)
    if [ -n "$units" ] && systemd_reads_dir; then run systemctl daemon-reload || true; fi
    config_dir_ours=$(awk '$1 == "dir" && $2 == d' d="$config_dir" "$manifest")
    config_kept=$(awk '$1 == "config"' "$manifest" | while read -r _ p; do if [ -e "$p" ]; then echo "config $p"; fi; done)
    if [ -n "$config_kept" ] && [ "$purge" = 0 ]; then
        # The configuration stays, and so does the line that says install.sh made it (a later
        # --purge, or the next install, knows it).
        note "kept: $manifest (it lists only the configuration now)"
        if [ "$dry_run" = 0 ]; then
            { echo "$config_kept"; [ -z "$config_dir_ours" ] || echo "$config_dir_ours"; } >"$manifest"
        fi
        exit "$kept"
    fi
    note "remove: $manifest"; run rm -f -- "$manifest"
    if [ -n "$config_dir_ours" ] && [ -d "$config_dir" ]; then
        if [ -z "$(ls -A -- "$config_dir")" ] || [ "$dry_run" = 1 ]; then
            note "remove: $config_dir/"; run rmdir -- "$config_dir"
        else
            note "kept: $config_dir/ (not empty: $(ls -A -- "$config_dir" | tr '\n' ' '))"
        fi
    fi
    [ "$kept" = 0 ] || note "some things were kept (above): remove them by hand if they are no longer wanted"
    exit "$kept"
fi

# --- where things are (nothing runs yet) --------------------------------------------------
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
            if [ -x "$p" ]; then python=$(cd "$(dirname "$p")" && pwd)/python; break; fi
        done
    fi
    [ -n "$python" ] && [ -x "$python" ] || die "cannot find the OMERO server's Python: use --python"
fi
[ -z "$python" ] || check_path --python "$python"
if { [ -n "$schedule" ] || [ "$systemd" = 1 ] || [ "$upload" = 1 ]; } && [ -z "$python" ]; then
    die "no OMERO.server found (--omero-dir, OMERODIR or omero on PATH): scheduling and --upload need the server's Python"
fi
omero_parts=0
[ -n "$python" ] && omero_parts=1

# The OMERO account: --user, else who owns OMERO.server (links resolved: /opt/omero/server/
# OMERO.server is usually a link to a versioned directory), else who owns the Python.
if [ "$omero_parts" = 1 ] && [ -z "$user" ]; then
    owned=${omero_dir:-$(dirname "$(dirname "$python")")}
    user=$(stat -L -c %U -- "$(readlink -f -- "$owned")")
    [ "$user" != root ] || [ "$uninstall" = 1 ] ||
        die "$owned belongs to root: name the account OMERO runs as with --user (the scheduler and pip never run as root)"
fi
if [ -n "$user" ]; then
    uid=$(id -u -- "$user" 2>/dev/null) || die "--user: no account called $user"
    gid=$(id -g -- "$user")
    [ "$uid" != 0 ] || die "--user $user is root: the scheduler and pip run as the account OMERO runs as, never as root"
    user_home=$(getent passwd "$user" | cut -d: -f6)
    user_home=${user_home:-/}
    if [ "$is_root" = 0 ] && [ "$uid" != "$(id -u)" ]; then
        die "run install.sh as root, or as $user (the account OMERO runs as): it runs pip and owns the scheduler"
    fi
fi



# --- 1. checks: nothing has changed yet ---------------------------------------------------
step "checking (nothing is changed before every check has passed)"
problems=()
if [ "$omero_parts" = 1 ]; then
    note "OMERO.server: ${omero_dir:-none (scripts only by --upload)}; Python: $python; account: $user"
    # Asked as the OMERO account: the server's Python never runs as root.
    as_user "$python" -I -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
        die "$python is Python $(as_user "$python" -I -c 'import platform; print(platform.python_version())' 2>/dev/null): omero-iscc needs Python 3.9 or newer in the OMERO server's environment"
    site_dirs=$(as_user "$python" -I -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"]); print(p["scripts"])') ||
        die "$python does not run as $user"
    scripts_bin=$(echo "$site_dirs" | sed -n 3p)
    venv_worker="$scripts_bin/omero-iscc"
    if [ "$upload" = 1 ]; then
        [ -x "$(dirname "$python")/omero" ] || die "--upload needs the omero command next to $python"
        as_user "$(dirname "$python")/omero" sessions key >/dev/null 2>&1 ||
            die "no OMERO session to upload with: run '$(dirname "$python")/omero login' as $user (an administrator with the WriteScriptRepo privilege) first, then run install.sh again"
    fi
    if [ -n "$schedule" ] || [ "$systemd" = 1 ]; then
        # What the scheduler runs must be writable by root and $user only: the interpreter,
        # its environment's configuration, the site directories and the .pth files in them
        # (each line of one can run code at start-up), the worker's directory.
        venv_cfg="$(dirname "$(dirname "$python")")/pyvenv.cfg"
        # (sed, not head: head leaves early and, under pipefail, a writer killed by SIGPIPE
        # would fail the run now and then)
        pth=$(printf '%s\n' "$site_dirs" | sed -n '1,2p' | sort -u |
            while read -r d; do find "$d" -maxdepth 1 -name '*.pth' 2>/dev/null; done)
        for p in "$python" $site_dirs $([ -e "$venv_cfg" ] && echo "$venv_cfg") $pth; do
            bad=$(unsafe_path "$p")
            [ -z "$bad" ] || problems+=("the scheduler would run $p, but $bad may be written by another account than root and $user (owner uid $(stat -L -c %u -- "$bad"), mode $(stat -L -c %a -- "$bad")): chown or chmod go-w it")
        done
    fi
fi
roots=("$config_dir")
[ -z "$prefix_worker" ] || roots+=("$prefix/bin")
if [ -n "$schedule" ] || [ "$systemd" = 1 ]; then
    # The state and log directories become $user's; root only creates them, in a parent of its own.
    roots+=("$(dirname "$state_dir")")
    if [ "$systemd" = 1 ]; then roots+=("$systemd_dir"); else roots+=("$cron_dir" "$(dirname "$log_dir")"); fi
fi
for d in "${roots[@]}"; do
    if [ "$is_root" = 1 ]; then
        bad=$(root_dir_problem "$d")
        [ -z "$bad" ] || problems+=("$d: $bad may be written by another account than root: root would create files there (chown it to root, chmod go-w)")
    else
        e=$d
        while [ ! -e "$e" ]; do e=$(dirname -- "$e"); done
        [ -w "$e" ] || problems+=("$d: not writable as $(id -un) (run install.sh as root)")
    fi
done
if [ -n "$schedule" ] || [ "$systemd" = 1 ]; then
    for d in "$state_dir" $([ "$systemd" = 1 ] || echo "$log_dir"); do
        if [ -e "$d" ] && [ "$(stat -c %U -- "$d")" != "$user" ]; then
            problems+=("$d exists and belongs to $(stat -c %U -- "$d"), not to $user who runs the scheduler: give it to $user, or choose another directory")
        fi
    done
fi
if [ -n "$binary" ]; then
    static_elf "$binary" || problems+=("$binary is not a static x86-64 executable (it needs a dynamic loader): build it with cargo build --release --locked")
fi
if [ ${#problems[@]} -gt 0 ]; then
    printf 'install.sh: %s\n' "${problems[@]}" >&2
    exit 2
fi

stage=$(mktemp -d)
trap 'rm -rf -- "$stage"' EXIT
chmod 755 "$stage"

# --- 2. the wheel -------------------------------------------------------------------------
# The worker root installs is one root holds: copied from --binary, extracted from --wheel by
# root, or copied from the build. pip installs the same bytes as the OMERO account.
step "the omero-iscc $version wheel"
if [ -n "$wheel" ]; then
    cp -- "$wheel" "$stage/"
    note "given: $wheel"
    # Taken out by this account (root's own tools), so that what root installs in --prefix is
    # what the wheel holds.
    command -v python3 >/dev/null || die "python3 is needed to take the worker out of $wheel"
    python3 -I - "$wheel" "$stage/omero-iscc" <<'PY' || die "$wheel holds no worker: it is not the omero-iscc platform wheel"
import re, sys, zipfile

with zipfile.ZipFile(sys.argv[1]) as z:
    [member] = [n for n in z.namelist() if re.fullmatch(r"omero_iscc-[^/]+\.data/scripts/omero-iscc", n)]
    with open(sys.argv[2], "wb") as out:
        out.write(z.read(member))
PY
else
    if [ -z "$binary" ]; then
        builder=$(stat -c %U -- "$here")
        if [ "$(stat -c %u -- "$here")" = 0 ]; then
            die "the checkout belongs to root, and building as root runs every crate's build script as root: build the worker as an unprivileged user (cargo build --release --locked) and pass --binary, or install a wheel with --wheel"
        fi
        binary="$here/target/x86_64-unknown-linux-gnu/release/omero-iscc"
        if [ "$dry_run" = 1 ]; then
            note "would build: cargo build --release --locked, as $builder"
        else
            note "building as $builder: cargo build --release --locked"
            build_cmd=(cargo build --release --locked --manifest-path "$here/Cargo.toml")
            if [ "$is_root" = 1 ]; then
                bhome=$(getent passwd "$builder" | cut -d: -f6)
                (cd / && env -i PATH="$bhome/.cargo/bin:/usr/local/bin:/usr/bin:/bin" HOME="$bhome" USER="$builder" \
                    LANG=C.UTF-8 "$setpriv" --reuid="$builder" --regid="$(id -g -- "$builder")" --init-groups -- \
                    "${build_cmd[@]}") || die "the build failed (as $builder)"
            else
                command -v cargo >/dev/null || die "cargo not found: install Rust, or pass --binary PATH or --wheel FILE"
                "${build_cmd[@]}" || die "the build failed"
            fi
        fi
    fi
    if [ -f "$binary" ]; then
        install -m 755 -- "$binary" "$stage/omero-iscc"
        static_elf "$stage/omero-iscc" || die "$binary is not a static x86-64 executable"
    fi
    mkdir "$stage/src" "$stage/out"
    cp -r -- "$here/omero_scripts/make_wheel.py" "$here/omero_scripts/pyproject.toml" "$here/omero_scripts/omero_iscc" \
        "$here/omero_scripts/omero" "$stage/src/"
    find "$stage/src" -name __pycache__ -prune -exec rm -rf {} +
    [ ! -f "$here/LICENSE" ] || cp -- "$here/LICENSE" "$stage/src/"
fi
if [ -f "$stage/omero-iscc" ]; then
    chmod 755 "$stage/omero-iscc"
    static_elf "$stage/omero-iscc" || die "the worker is not a static x86-64 executable"
    # The selftest runs as the OMERO account (or this one; as root with no OMERO account: as
    # nobody), never as root.
    tester=(as_user)
    if [ "$is_root" = 1 ] && [ "$omero_parts" = 0 ]; then
        tester=(env -i PATH=/usr/bin:/bin "$setpriv" --reuid=65534 --regid=65534 --clear-groups --)
    fi
    "${tester[@]}" "$stage/omero-iscc" selftest >/dev/null ||
        die "the worker's selftest failed: run '$stage/omero-iscc selftest' to see which vector"
    note "selftest passed: $("${tester[@]}" "$stage/omero-iscc" --version 2>/dev/null || echo omero-iscc)"
else
    note "would run the worker's selftest"
fi
if [ -z "$wheel" ] && [ "$omero_parts" = 1 ]; then
    if [ -f "$stage/omero-iscc" ]; then
        chown "$user" "$stage/out" 2>/dev/null || true
        wheel=$(as_user "$python" -I "$stage/src/make_wheel.py" "$stage/out" --worker "$stage/omero-iscc") ||
            die "cannot package the worker into a wheel"
    else
        wheel="$stage/out/omero_iscc-$version-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    fi
elif [ -n "$wheel" ]; then
    wheel="$stage/$(basename "$wheel")"
fi

# --- manifest -----------------------------------------------------------------------------
entries=()
record() { entries+=("$*"); }
write_manifest() {
    [ "$dry_run" = 0 ] && [ ${#entries[@]} -gt 0 ] && [ -d "$config_dir" ] || return 0
    local new tmp
    new=$(mktemp -p "$stage")
    # Earlier runs' lines and this run's, one per kind and path (the latest wins, in the
    # order first installed: uninstall walks it backwards).
    { [ -f "$manifest" ] && cat -- "$manifest"; printf '%s\n' "${entries[@]}"; } |
        awk '{k = $1 " " $2; if (!(k in line)) keys[n++] = k; line[k] = $0}
             END {for (i = 0; i < n; i++) print line[keys[i]]}' >"$new"
    [ -f "$manifest" ] && cmp -s -- "$new" "$manifest" && return 0
    tmp=$(mktemp "$config_dir/.install-manifest.XXXXXX")
    cat -- "$new" >"$tmp"
    chmod 644 -- "$tmp"
    mv -fT -- "$tmp" "$manifest"
}
# mkdir_root DIR MODE [OWNER]: creates DIR with MODE (and OWNER), and any missing parent with
# 0755, each recorded so that uninstall removes it again when it is empty. An existing DIR is
# left as it is (the checks made sure it is fit).
declare -A made=()
mkdir_root() {
    local d=$1 missing=() p mode
    p=$d
    while [ ! -e "$p" ] && [ ! -L "$p" ] && [ -z "${made[$p]:-}" ]; do
        missing=("$p" "${missing[@]}")
        p=$(dirname -- "$p")
    done
    for p in "${missing[@]}"; do
        mode=755
        [ "$p" != "$d" ] || mode=$2
        if [ "$p" = "$d" ]; then note "create: $p/ (mode $mode${3:+, owner $3})"; else note "create: $p/ (mode $mode)"; fi
        made[$p]=1
        record "dir $p"
        [ "$dry_run" = 0 ] || continue
        mkdir -m "$mode" -- "$p"
        [ "$p" != "$d" ] || [ -z "${3:-}" ] || chown --no-dereference -- "$3:$(id -gn -- "$3")" "$p"
    done
}
# put_root SRC DEST MODE KIND: installs a root-owned file unless an identical one is there; the
# file is written beside DEST and renamed over it (a link at DEST is replaced, not followed).
put_root() {
    if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s -- "$1" "$2" && [ "$(stat -c %a -- "$2")" = "$3" ]; then
        note "unchanged: $2"
    else
        note "install: $2"
        if [ "$dry_run" = 0 ]; then
            local tmp
            tmp=$(mktemp "$(dirname -- "$2")/.omero-iscc.XXXXXX")
            cat -- "$1" >"$tmp"
            chmod "$3" -- "$tmp"
            mv -fT -- "$tmp" "$2"
        fi
    fi
    record "$4 $2 $(sha "$1")"
}
put_text() {
    local tmp; tmp=$(mktemp -p "$stage"); printf '%s' "$3" >"$tmp"
    put_root "$tmp" "$1" "$2" "${4:-file}"
}
trap 'write_manifest; rm -rf -- "$stage"' EXIT
step "configuration directory $config_dir (the manifest of what is installed)"
mkdir_root "$config_dir" 755

# --- 3. the worker for people -------------------------------------------------------------
if [ -n "$prefix_worker" ]; then
    step "the worker for people: $prefix_worker"
    mkdir_root "$prefix/bin" 755
    if [ -f "$stage/omero-iscc" ]; then
        put_root "$stage/omero-iscc" "$prefix_worker" 755 file
    else
        note "would install: $prefix_worker"
    fi
fi

# --- 4. the OMERO server's parts, as the OMERO account ------------------------------------
if [ "$omero_parts" = 0 ]; then
    step "no OMERO.server found (--omero-dir, OMERODIR or omero on PATH): $([ "$dry_run" = 1 ] && echo "would install" || echo "installed") the worker for people only"
    note "skipped: the wheel in the server's Python, the scripts, the scheduler"
    step "done"
    exit 0
fi
step "the wheel into $python's environment, as $user (pip, offline)"
same=0
if [ -f "$wheel" ]; then
    # Already installed with the same files as the wheel's (pip's RECORD against the wheel's,
    # by hash): nothing to do, so a second run changes nothing.
    as_user "$python" -I - "$wheel" <<'PY' && same=1 || true
import csv, io, sys, zipfile
from importlib import metadata


def key(path):
    # The worker lands in the scripts directory, wherever that is; the rest in site-packages.
    return "omero-iscc" if path.endswith("/omero-iscc") else path


try:
    dist = metadata.distribution("omero-iscc")
except metadata.PackageNotFoundError:
    sys.exit(1)
with zipfile.ZipFile(sys.argv[1]) as z:
    record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    rows = csv.reader(io.StringIO(z.read(record).decode()))
    wanted = {(key(r[0]), r[1]) for r in rows if r and r[1] and ".dist-info/" not in r[0]}
have = {(key(str(f)), f"{f.hash.mode}={f.hash.value}") for f in dist.files or [] if f.hash}
have = {(k, h) for k, h in have if ".dist-info/" not in k}
sys.exit(0 if wanted == have else 1)
PY
fi
if [ "$same" = 1 ]; then
    note "unchanged: omero-iscc $version is installed as in the wheel"
else
    note "install: $(basename "$wheel")"
    run_as_user "$python" -I -m pip install --quiet --no-cache-dir --no-index --no-deps --force-reinstall "$wheel" ||
        die "pip could not install the wheel into $python's environment (as $user)"
fi
record "pip $python - $user"
if { [ -n "$schedule" ] || [ "$systemd" = 1 ]; } && [ "$dry_run" = 0 ]; then
    bad=$(unsafe_path "$venv_worker")
    [ -z "$bad" ] || die "the scheduler would run $venv_worker, but $bad may be written by another account than root and $user"
fi
if [ "$upload" = 1 ]; then
    step "the scripts, uploaded as iscc/ISCC_*.py through $user's omero session"
    run_as_user "$(dirname "$python")/omero" iscc scripts install --upload </dev/null || die "uploading the scripts failed"
    record "scripts-upload - $python $user"
else
    step "the scripts into $omero_dir/lib/scripts/iscc, as $user"
    if [ "$dry_run" = 1 ] && [ "$same" = 0 ]; then
        note "would run as $user: $python -I -m omero_iscc scripts install --omero-dir $omero_dir"
    else
        as_user "$python" -I -m omero_iscc scripts install --omero-dir "$omero_dir" ${dry[@]+"${dry[@]}"} |
            sed 's/^/    /'
        [ "${PIPESTATUS[0]}" = 0 ] || die "copying the scripts failed"
    fi
    record "scripts-copy $omero_dir $python $user"
fi

# --- 5. scheduling ------------------------------------------------------------------------
if [ -n "$schedule" ] || [ "$systemd" = 1 ]; then
    command_line="$python -I -m omero_iscc --config $config --state-dir $state_dir run --once"
    step "the scheduler's state directory $state_dir (owner $user, mode 0700)"
    mkdir_root "$state_dir" 700 "$user"
    if [ "$systemd" = 1 ]; then
        step "systemd service and timer in $systemd_dir (logs: journalctl -u omero-iscc)"
        protect_home=yes
        for p in "$python" "$omero_dir" "$config_dir" "$state_dir"; do
            case "$(readlink -f -- "$p" 2>/dev/null || echo "$p")" in
                /home/*|/root/*|/run/user/*) protect_home=read-only ;;
            esac
        done
        mkdir_root "$systemd_dir" 755
        put_text "$service" 644 "[Unit]
Description=omero-iscc: annotate new OMERO images with their ISCC
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
User=$user
Group=$(id -gn -- "$user")
ExecStart=$command_line
# SIGTERM goes to the scheduler only: it finishes the image in hand and exits 0.
KillMode=mixed
TimeoutStopSec=15min
# Below the OMERO server's own work.
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
# Hardening: it reads the repository, writes only its state (and logs to the journal).
$([ "$(dirname "$state_dir")" = /var/lib ] && echo "StateDirectory=$(basename "$state_dir")
StateDirectoryMode=0700")
ReadWritePaths=$state_dir
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=$protect_home
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
" unit
        put_text "$timer" 644 "[Unit]
Description=Run omero-iscc periodically

[Timer]
OnCalendar=$on_calendar
Persistent=true

[Install]
WantedBy=timers.target
" unit
        if systemd_reads_dir; then
            run systemctl daemon-reload
            run systemctl enable --now omero-iscc.timer
        else
            note "$systemd_dir is not a directory systemd reads: enable the timer where it is used"
        fi
    else
        step "cron entry $cron_file (log: $log_dir/scheduler.log, rotated weekly)"
        mkdir_root "$log_dir" 750 "$user"
        mkdir_root "$cron_dir" 755
        put_text "$cron_file" 644 "# omero-iscc scheduler (installed by install.sh); its log is rotated by $logrotate_file
$schedule $user nice -n 10 $command_line >>$log_dir/scheduler.log 2>&1
"
        if [ -d "$logrotate_dir" ] && [ -z "$(root_dir_problem "$logrotate_dir")" ]; then
            put_text "$logrotate_file" 644 "$log_dir/*.log {
    su $user $(id -gn -- "$user")
    weekly
    rotate 8
    compress
    delaycompress
    missingok
    notifempty
    copytruncate
}
"
        else
            note "no $logrotate_dir: rotate $log_dir/scheduler.log by other means"
        fi
    fi
    step "configuration $config"
    if [ -e "$config" ] || [ -L "$config" ]; then
        note "kept: $config (exists)"
    else
        note "create: $config (mode 0600, owner $user): set the account the scheduler logs in as"
        if [ "$dry_run" = 0 ]; then
            # Written beside it, owned and restricted before it gets its name, linked in only
            # if the name is free (link(2) never follows or replaces what is there).
            tmp=$(mktemp "$config_dir/.config.XXXXXX")
            cat >"$tmp" <<JSON
{
  "host": "localhost",
  "port": 4064,
  "username": "CHANGE-ME",
  "password": "CHANGE-ME",
  "state_dir": "$state_dir",
  "batch_size": 100
}
JSON
            chmod 600 -- "$tmp"
            [ "$is_root" = 0 ] || chown --no-dereference -- "$user" "$tmp"
            ln -T -- "$tmp" "$config" 2>/dev/null || { rm -f -- "$tmp"; die "$config appeared while it was being written: not touched"; }
            rm -f -- "$tmp"
        fi
        record "config $config"
    fi
fi
step "done"
