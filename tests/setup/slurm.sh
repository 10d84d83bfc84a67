# Sourced by tests/run.sh: Slurm (slurmctld, slurmd, the client commands) and munge from
# Debian's packages, for the backlog tests, which start a one-node cluster by hand
# (tests/setup/slurm_local.py) and fail, not skip, when it cannot start. Installed once.
_omero_iscc_have_slurm() {
    local n
    for n in slurmctld slurmd sbatch squeue scancel munge; do
        command -v "$n" >/dev/null 2>&1 || [ -x "/usr/sbin/$n" ] || return 1
    done
    [ -x /usr/sbin/munged ]
}
if ! _omero_iscc_have_slurm; then
    echo "tests/setup: installing slurmctld, slurmd, slurm-client and munge (Debian packages)" >&2
    _sudo=""
    [ "$(id -u)" -eq 0 ] || _sudo="sudo"
    _pkgs=(slurmctld slurmd slurm-client munge)
    $_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${_pkgs[@]}" >&2 ||
        { $_sudo apt-get update >&2 &&
          $_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${_pkgs[@]}" >&2; } ||
        echo "tests/setup: Slurm could not be installed: the backlog tests will fail and say why" >&2
    unset _sudo _pkgs
fi
unset -f _omero_iscc_have_slurm
