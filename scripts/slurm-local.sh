#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, for testing the
# workflow's SLURM profile (tests/slurm) or trying it by hand.
#
#   scripts/slurm-local.sh start  <statedir>   # munged + slurmctld + slurmd, waits for `idle`
#   scripts/slurm-local.sh env    <statedir>   # prints the exports of SLURM_CONF and PATH
#   scripts/slurm-local.sh status <statedir>   # daemons alive? sinfo; exit 1 when not running
#   scripts/slurm-local.sh stop   <statedir>   # stops exactly the daemons `start` started
#
# Then: eval "$(scripts/slurm-local.sh env <statedir>)"; sinfo; sbatch ...
#
# <statedir>/bin holds wrappers of the client commands (srun, sbatch, squeue, ...)
# that set SLURM_CONF themselves: the Snakemake jobstep plugin strips every
# SLURM_* variable, SLURM_CONF included, before its `srun` inside a job, and a
# config outside /etc/slurm is then not found ("Could not establish a
# configuration source"). With <statedir>/bin first in PATH (`env` prints that),
# which the jobs inherit (sbatch --export=ALL), their srun finds this cluster.
#
# Everything lives in <statedir>: a fresh munge key and socket (its own munged, so
# a system munged and /etc/munge are left alone), slurm.conf (the daemons get
# `-f`, the clients SLURM_CONF), pid files, state, spool and logs. The ports are
# the first free pair from 6817 up. No accounting (sacct does not work; the
# Snakemake plugin must use `slurm-status-command: squeue`).
#
# Needs root and the Debian packages munge slurmctld slurmd slurm-client
# (scripts/install-system-deps.sh). All daemons run as root, SlurmUser=root
# included: a test cluster with no slurm-owned directories to prepare; jobs run
# as the submitting user (root in CI).
#
# Environment: SLURM_LOCAL_TIMEOUT (seconds to wait for `idle`, default 60).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status|env <statedir>" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
[ "$cmd" != start ] || mkdir -p "$2"
case $2 in /*) STATE=$2 ;; *) STATE=$PWD/$2 ;; esac
[ ! -d "$STATE" ] || STATE=$(cd "$STATE" && pwd)
CONF=$STATE/slurm.conf
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
# daemon name (as in /proc/PID/comm) and its pid file; stop order is this order
DAEMONS=("slurmd:$STATE/slurmd.pid" "slurmctld:$STATE/slurmctld.pid" "munged:$STATE/munge/munged.pid")

log() { echo "slurm-local: $*" >&2; }

# PID from a pid file when that process is alive, not a zombie, and is `name`.
live_pid() {
    local name=$1 file=$2 pid state
    [ -s "$file" ] || return 1
    pid=$( { tr -dc '0-9' <"$file"; } 2>/dev/null)  # the daemon may remove it meanwhile
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$state" != Z ] || return 1
    echo "$pid"
}

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

nodename() { uname -n | cut -d. -f1; }  # slurmd matches NodeName to the short host name

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require() {
    local missing=()
    for b in munged mungekey slurmctld slurmd sinfo sbatch squeue scontrol; do
        command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || missing+=("$b")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "missing ${missing[*]}: apt-get install munge slurmctld slurmd slurm-client (scripts/install-system-deps.sh)"
        exit 3
    fi
    [ "$(id -u)" -eq 0 ] || { log "needs root (slurmd runs jobs as their user)"; exit 3; }
}

write_conf() {
    local node cpus mem ctld_port=6817
    node=$(nodename)
    cpus=$(nproc)
    mem=$(( $(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 2048 ))
    [ "$mem" -ge 512 ] || mem=512
    while ! { port_free "$ctld_port" && port_free $((ctld_port + 1)); }; do
        ctld_port=$((ctld_port + 2))
        [ "$ctld_port" -lt 6900 ] || { log "no free port pair in 6817-6900"; exit 1; }
    done
    cat >"$CONF" <<EOF
# written by scripts/slurm-local.sh for a single-node test cluster; everything under $STATE
ClusterName=medssltest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$((ctld_port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
PlugStackConfig=$STATE/plugstack.conf
MailProg=/bin/true
ReturnToService=2
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmdSpoolDir=$STATE/spool
StateSaveLocation=$STATE/ctld
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue this long (the plugin's status command)
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$STATE/plugstack.conf"  # no SPANK plugins from /etc/slurm
    mkdir -p "$STATE/bin"
    local c real
    for c in srun sbatch salloc squeue sinfo scontrol scancel sacct sacctmgr sshare sstat; do
        real=$(PATH=/usr/bin:/bin:/usr/sbin command -v "$c") || continue
        printf '#!/bin/sh\nSLURM_CONF='\''%s'\'' exec %s "$@"\n' "$CONF" "$real" >"$STATE/bin/$c"
        chmod +x "$STATE/bin/$c"
    done
}

do_status() {
    local d name file pid ok=0
    for d in "${DAEMONS[@]}"; do
        name=${d%%:*}; file=${d#*:}
        if pid=$(live_pid "$name" "$file"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; ok=1; fi
    done
    if [ $ok -eq 0 ]; then
        echo "node state: $(SLURM_CONF=$CONF timeout 10 sinfo -h -o %T 2>&1 | head -1)"
    fi
    return $ok
}

do_stop() {
    local d name file pid jobs
    # First cancel this cluster's jobs: slurmstepd and the job processes would
    # outlive slurmd otherwise.
    if live_pid slurmctld "$STATE/slurmctld.pid" >/dev/null; then
        jobs=$(SLURM_CONF=$CONF timeout 10 squeue -h -o %i -t PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            log "cancelling jobs: $(tr '\n' ' ' <<<"$jobs")"
            # shellcheck disable=SC2086
            SLURM_CONF=$CONF timeout 10 scancel $jobs || true
            for _ in $(seq 1 150); do  # up to 15 s
                [ -z "$(SLURM_CONF=$CONF timeout 10 squeue -h -o %i -t RUNNING,COMPLETING 2>/dev/null)" ] && break
                sleep 0.1
            done
        fi
    fi
    for d in "${DAEMONS[@]}"; do
        name=${d%%:*}; file=${d#*:}
        if pid=$(live_pid "$name" "$file"); then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do  # 10 s, then SIGKILL
                live_pid "$name" "$file" >/dev/null || break
                sleep 0.1
            done
            if live_pid "$name" "$file" >/dev/null; then
                log "$name (pid $pid) ignored SIGTERM; SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.5
            fi
            log "stopped $name (pid $pid)"
        fi
        rm -f "$file"
    done
}

# Print the logs, stop what did start, exit 1.
fail_start() {
    log "$*; logs:"
    tail -n 20 "$STATE/munge/munged.log" "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 2>/dev/null || true
    do_stop
    exit 1
}

do_start() {
    require
    if do_status >/dev/null 2>&1; then log "already running in $STATE"; return 0; fi
    do_stop 2>/dev/null  # leftovers of a half-started cluster in this statedir
    local t0
    t0=$(date +%s.%N)
    mkdir -p "$STATE/munge" "$STATE/ctld" "$STATE/spool" "$STATE/log"
    chmod 700 "$STATE/munge"

    # 1. munged: its own key and socket; --force because it runs as root and the
    # socket's parent directories need not be world-executable (pytest's tmp is 0700)
    [ -s "$STATE/munge/munge.key" ] || mungekey --create --keyfile="$STATE/munge/munge.key"
    /usr/sbin/munged --force --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
        --seed-file="$STATE/munge/munged.seed" 2>>"$STATE/munge/munged.log" || fail_start "munged did not start"
    local ok=""
    for _ in $(seq 1 50); do
        if timeout 5 munge -S "$STATE/munge/munge.socket" -n 2>/dev/null \
            | timeout 5 unmunge -S "$STATE/munge/munge.socket" >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.1
    done
    [ -n "$ok" ] || fail_start "munged does not answer on $STATE/munge/munge.socket"

    # 2. slurmctld, then slurmd (they daemonize and write their pid files)
    write_conf
    /usr/sbin/slurmctld -f "$CONF" || fail_start "slurmctld did not start"
    /usr/sbin/slurmd -f "$CONF" -N "$(nodename)" || fail_start "slurmd did not start"

    # 3. ready when the node is idle
    local state=""
    export SLURM_CONF=$CONF
    while awk -v e="$(elapsed "$t0")" -v t="$TIMEOUT" 'BEGIN {exit !(e < t)}'; do
        state=$(timeout 10 sinfo -h -o %T 2>/dev/null | head -1 || true)
        [ "$state" = idle ] && break
        sleep 0.5
    done
    [ "$state" = idle ] || fail_start "cluster not idle after ${TIMEOUT}s (node state: '${state}')"
    log "ready in $(elapsed "$t0") s: $(nodename), $(nproc) CPUs; eval \"\$($0 env $STATE)\""
}

case $cmd in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    env) echo "export SLURM_CONF=$CONF PATH=$STATE/bin:\$PATH" ;;
    *) usage ;;
esac
