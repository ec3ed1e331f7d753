#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for CI's tests of `--backend slurm`
# (tests/test_slurm_backend.py submits job arrays to it through submitit). What it sets up:
#
#   packages  Debian's slurm-wlm and munge (apt-get; skipped when `sinfo` is on PATH already)
#   munge     a key (/etc/munge/munge.key, created when missing) and munged, as the munge user
#   config    /etc/slurm/slurm.conf from .ci/slurm/slurm.conf.in: one node, this host at 127.0.0.1,
#             with the CPUs and memory `slurmd -C` reports (memory: 95% of it); one partition,
#             `debug`, the default; no GPUs (the tests pass --gpus-per-job 0); select/cons_tres
#             (cores and memory consumable: small jobs share the node); proctrack/linuxproc and
#             task/none (no cgroups needed, so it runs in a container); no accounting (no sacct:
#             dept.backends follows the jobs with squeue); KillWait 30 s
#   state     everything else under $DEPT_SLURM_DIR (default /var/spool/dept-slurm): slurmctld
#             state, slurmd spool, pid files and the daemons' logs (log/slurmctld.log, log/slurmd.log)
#   daemons   slurmctld and slurmd, as root; then it waits until `sinfo` shows the node idle
#
# Idempotent: run again, it finds the daemons running with the same config and only checks the
# node (a node left down or drained is resumed); with another config, or a daemon gone, it stops
# the daemons it started (by their pid files) and starts them anew with their state cleared
# (slurmctld -c: jobs of an earlier run are forgotten and their processes ended). It never
# overwrites a slurm.conf it did not write: with such a file (a real cluster) it only checks that
# `sinfo` answers. Needs root. Takes a few seconds once the packages are installed (installing
# them: a minute or so, depending on the mirror).
#
#   bash .ci/slurm/setup.sh          set up (or check) the cluster
#   bash .ci/slurm/setup.sh --stop   stop the daemons it started
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR=${DEPT_SLURM_DIR:-/var/spool/dept-slurm}
CONF=${DEPT_SLURM_CONF:-/etc/slurm/slurm.conf}
MARKER="written by dept .ci/slurm/setup.sh"
WAIT_S=${DEPT_SLURM_WAIT_S:-120}

say() { echo "slurm setup: $*"; }
die() {
    echo "slurm setup: ERROR: $*" >&2
    for log in "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; do
        [ -f "$log" ] && { echo "--- last lines of $log:" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}

# A daemon this script started and that is still alive: the pid in its pid file runs `name`.
running() {
    local name=$1 pidfile="$DIR/run/$1.pid" pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null)
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

stop() {
    local name=$1 pidfile="$DIR/run/$1.pid" pid
    running "$name" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || { rm -f "$pidfile"; return 0; }
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null
    rm -f "$pidfile"
}

if [ "${1:-}" = "--stop" ]; then
    stop slurmd
    stop slurmctld
    exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts daemons); run it as root or with sudo"

# -- packages ------------------------------------------------------------------------------------
if ! command -v sinfo >/dev/null 2>&1; then
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
fi
for tool in sinfo sbatch srun squeue scancel scontrol slurmctld slurmd munged munge unmunge; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH after installing slurm-wlm and munge"
done
say "$(slurmctld -V)"

# -- a cluster that is not ours: only check it answers -------------------------------------------
if [ -f "$CONF" ] && ! grep -q "$MARKER" "$CONF"; then
    say "$CONF was not written by this script: using that cluster as it is"
    sinfo >/dev/null 2>&1 || die "sinfo does not answer with $CONF"
    sinfo
    exit 0
fi

# -- munge ---------------------------------------------------------------------------------------
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_works; then
    key=/etc/munge/munge.key
    if [ ! -s "$key" ]; then
        say "creating $key"
        install -d -m 0700 -o munge -g munge /etc/munge
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$key" || die "mungekey --create failed"
        else
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge "$key" && chmod 0400 "$key"
    install -d -m 0755 -o munge -g munge /run/munge /var/lib/munge /var/log/munge
    say "starting munged"
    runuser -u munge -- munged || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 25); do munge_works && break; sleep 0.2; done
    munge_works || die "munge does not work after starting munged (see /var/log/munge/munged.log)"
fi

# -- slurm.conf ----------------------------------------------------------------------------------
host=$(hostname -s)
node=$(slurmd -C | head -n 1) || die "slurmd -C failed"
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
[ -n "$memory" ] || die "slurmd -C reported no RealMemory: $node"
node=$(sed -e 's/NodeName=[^ ]* *//' -e "s/RealMemory=[0-9]*/RealMemory=$((memory * 95 / 100))/" <<<"$node")
mkdir -p "$DIR/slurmctld" "$DIR/slurmd" "$DIR/run" "$DIR/log" "$(dirname "$CONF")"
new="$DIR/slurm.conf.new"
sed -e "s|@MARKER@|$MARKER|" -e "s|@HOST@|$host|g" -e "s|@DIR@|$DIR|g" -e "s|@NODE@|$node|" \
    "$HERE/slurm.conf.in" >"$new" || die "cannot write $new"

node_state() { sinfo -h -N -n "$host" -o %T 2>/dev/null | head -n 1; }
if cmp -s "$new" "$CONF" && running slurmctld && running slurmd && [ -n "$(node_state)" ]; then
    say "slurmctld and slurmd already running with this config"
    rm -f "$new"
else
    stop slurmd
    stop slurmctld
    mv "$new" "$CONF"
    say "wrote $CONF (node $host: $node)"
    say "starting slurmctld (state cleared) and slurmd"
    slurmctld -c || die "slurmctld did not start"
    for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
    slurmd || die "slurmd did not start"
fi

# -- wait until the node is idle -----------------------------------------------------------------
deadline=$((SECONDS + WAIT_S))
state=""
while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(node_state)
    case "$state" in
        idle) break ;;
        down*|drain*|drained*|fail*)
            scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
if [ "$state" != idle ]; then
    squeue 2>/dev/null
    die "node $host is '${state:-not known to sinfo}' after ${WAIT_S}s, not idle"
fi
sinfo
say "ready: node $host idle in partition debug"
