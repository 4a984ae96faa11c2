#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests marked `slurm` (and for trying the
# grid's SLURM path by hand): Debian's slurm-wlm and munge, run as root.
#
#   tools/slurm_cluster.sh install   # apt-get install slurm-wlm munge (needs a package mirror)
#   tools/slurm_cluster.sh start     # write the config, start munged, slurmctld, slurmd; wait for the node
#   tools/slurm_cluster.sh stop      # stop the daemons this script started
#   tools/slurm_cluster.sh status    # exit 0 when the node takes jobs
#
# The config is the minimal one seen working on this project's machines (gVisor containers
# without systemd or cgroups): SlurmUser=root, proctrack/linuxproc, task/none, cons_tres with
# CR_Core_Memory (so a job's --cpus-per-task and --mem are enforced as on a real cluster),
# JobRequeue=1, RequeueExit=75 (a job that exits 75, `train`'s "stopped by a scheduler's signal,
# resume me", is requeued), cred_expire=10 (a requeued job may start again 10 s later, not
# SLURM's default 120), scheduling passes every 2 s (not 30 and 60: a requeued job would wait
# for them), one node with this machine's CPUs and memory (`slurmd -C`), the feature `ci`
# and two GPUs of type `ci` as a GRES with nothing behind them: slurm-wlm 22.05
# drops a GPU without a device file ("Removing file-less GPU"), so each is a null device
# (/var/lib/replicate-slurm/gpuN, mknod c 1 3, like /dev/null); SLURM schedules them, gives each
# job its own and sets CUDA_VISIBLE_DEVICES, and no job can use them; and besides the default
# partition `debug`, a partition `short` whose MaxTime is one minute.  The files are written to
# /etc/slurm/slurm.conf and gres.conf only when absent or written by this script: a real
# cluster's config is never touched.  A changed config restarts the daemons.  Every failure ends
# with one line saying why, and the daemons' logs are in /var/log/slurm.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARK="# written by replicate tools/slurm_cluster.sh"
LOGS=/var/log/slurm
PARTITION=debug
SHORT_PARTITION=short       # MaxTime 1 minute: a job asking for more pends for ever (PartitionTimeLimit)
GPUS=2                      # GPUs of type ci: null devices, scheduled as GPUs (see above)
GPU_DIR=/var/lib/replicate-slurm
FEATURE=ci                  # a node feature, for --constraint
CRED_EXPIRE=10              # seconds a requeued job waits before it may start again (SLURM's default: 120)
CHANGED=0

die() { echo "slurm_cluster: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it writes $CONF and starts munged, slurmctld, slurmd)"; }

install() {
  need_root
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed (no package mirror reachable?)"
  apt-get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
}

write_config() {
  if [ -f "$CONF" ] && ! head -n 1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and was not written by this script; not overwriting a real cluster's config"
  fi
  local host node
  host=$(hostname)
  getent hosts "$host" >/dev/null || die "hostname '$host' does not resolve (add it to /etc/hosts)"
  # slurmd -C reports this machine's CPUs, sockets, cores, threads and memory as slurmd sees them.
  node=$(slurmd -C | head -n 1)
  [[ "$node" == NodeName=* ]] || die "slurmd -C did not describe this node: $node"
  if [ -f "$GRES_CONF" ] && ! head -n 1 "$GRES_CONF" | grep -qF "$MARK"; then
    die "$GRES_CONF exists and was not written by this script; not overwriting a real cluster's config"
  fi
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGS" "$GPU_DIR"
  local before="" i
  for ((i = 0; i < GPUS; i++)); do
    [ -c "$GPU_DIR/gpu$i" ] || mknod "$GPU_DIR/gpu$i" c 1 3 \
      || die "cannot make the null device $GPU_DIR/gpu$i that stands for a GPU (mknod needs CAP_MKNOD)"
  done
  [ -f "$CONF" ] && before=$(cat "$CONF")$(cat "$GRES_CONF" 2>/dev/null || true)
  printf '%s\nName=gpu Type=ci File=%s/gpu[0-%s]\n' "$MARK" "$GPU_DIR" "$((GPUS - 1))" >"$GRES_CONF"
  cat >"$CONF" <<EOF
$MARK
ClusterName=replicate
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=2
JobRequeue=1
RequeueExit=75
AuthInfo=cred_expire=$CRED_EXPIRE
GresTypes=gpu
ReturnToService=2
KillWait=30
MinJobAge=300
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
$node Gres=gpu:ci:$GPUS Feature=$FEATURE State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=$SHORT_PARTITION Nodes=ALL Default=NO MaxTime=1 State=UP
EOF
  [ "$before" != "$(cat "$CONF")$(cat "$GRES_CONF")" ] && CHANGED=1
  return 0
}

start_munge() {
  if munge -n </dev/null >/dev/null 2>&1; then
    return
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do
    munge -n </dev/null >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "munged started but munge -n fails (see /var/log/munge/munged.log)"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo --noheader --partition "$PARTITION" --format %T 2>/dev/null | head -n 1; }

status() { [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]; }

start() {
  need_root
  command -v slurmctld >/dev/null || die "slurm-wlm is not installed (tools/slurm_cluster.sh install)"
  write_config
  if [ "$CHANGED" = 1 ] && { running /run/slurmctld.pid || running /run/slurmd.pid; }; then
    # A node's GRES changes only when slurmd starts again (scontrol reconfigure is not enough).
    echo "slurm_cluster: the config changed; restarting slurmctld and slurmd"
    stop_daemons
  fi
  start_munge
  running /run/slurmctld.pid || slurmctld || die "slurmctld did not start (see $LOGS/slurmctld.log)"
  running /run/slurmd.pid || slurmd || die "slurmd did not start (see $LOGS/slurmd.log)"
  local state=""
  for _ in $(seq 300); do
    state=$(node_state)
    case "$state" in
      idle|mixed|allocated|completing) echo "slurm_cluster: node $(hostname) is $state"; return ;;
      down*|drain*|fail*) scontrol update NodeName="$(hostname)" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "the node did not come up within 60 s (state '${state:-unknown}'; see $LOGS/slurmctld.log and $LOGS/slurmd.log)"
}

stop_daemons() {
  local pidfile pid
  for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    if running "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
}

stop() {
  need_root
  stop_daemons
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
