# Sourced by tests/run.sh: from Debian's packages, Slurm (slurmctld, slurmd, slurmdbd, the
# client commands), munge, MariaDB (slurmdbd's database: sacct, user limits) and OpenSSH's
# server (a login node on 127.0.0.1), for the backlog tests, which start them by hand
# (tests/setup/slurm_local.py, sshd_local.py) and fail, not skip, when they cannot start.
# Installed once.
_omero_iscc_have_slurm() {
    local n
    for n in slurmctld slurmd slurmdbd sbatch squeue scancel sacct sacctmgr munge mariadbd mariadb-install-db \
        mariadb sshd ssh ssh-keygen; do
        command -v "$n" >/dev/null 2>&1 || [ -x "/usr/sbin/$n" ] || return 1
    done
    [ -x /usr/sbin/munged ]
}
if ! _omero_iscc_have_slurm; then
    echo "tests/setup: installing Slurm (with slurmdbd), munge, MariaDB and OpenSSH's server (Debian packages)" >&2
    _sudo=""
    [ "$(id -u)" -eq 0 ] || _sudo="sudo"
    _pkgs=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server mariadb-client openssh-server openssh-client)
    # The packages' scripts must not start the services: the tests start their own.
    _policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        _policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $_sudo tee "$_policy" >/dev/null && $_sudo chmod 755 "$_policy"
    fi
    $_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${_pkgs[@]}" >&2 ||
        { $_sudo apt-get update >&2 &&
          $_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${_pkgs[@]}" >&2; } ||
        echo "tests/setup: the Slurm packages could not be installed: the backlog tests will fail and say why" >&2
    [ -z "$_policy" ] || $_sudo rm -f "$_policy"
    unset _sudo _pkgs _policy
fi
unset -f _omero_iscc_have_slurm
