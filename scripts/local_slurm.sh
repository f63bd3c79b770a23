#!/usr/bin/env bash
# A real one-node Slurm cluster with accounting on this machine: munge, MariaDB, slurmdbd,
# slurmctld and slurmd, as root, without systemd (containers have none). The cluster tests use it;
# so can anyone who wants to try `hydra/launcher=slurm` without a cluster.
#
#   scripts/local_slurm.sh install   # Debian packages (root; about two minutes)
#   scripts/local_slurm.sh start     # writes /etc/slurm/*.conf, starts every daemon, waits for an idle node
#   scripts/local_slurm.sh status    # exit 0 when the node answers and accounting works
#   scripts/local_slurm.sh stop      # cancels every job, stops every daemon
#
# Settings a container needs: proctrack/linuxproc and task/none (no cgroups), SlurmUser=root.
# KillWait is 2 s: submitit's jobs ignore SIGTERM, so a cancelled or requeued task is killed 2 s later.
set -euo pipefail

CLUSTER=${ACCEL_BENCH_SLURM_CLUSTER:-accelbench}
NODE=$(hostname -s)
DB_PASSWORD=accel_bench_local_slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm

say() { echo "[local_slurm] $*"; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$((seconds * 5))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  say "gave up waiting for $what after ${seconds} s"
  return 1
}

install() {
  [ "$(id -u)" = 0 ] || { say "install needs root"; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server >/dev/null
  say "installed: $(slurmctld -V)"
}

write_configs() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p /etc/slurm "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" /run/slurm
  cat >/etc/slurm/slurm.conf <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge=300
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurm/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 munge sh -c 'munge -n | unmunge'
}

start_mariadb() {
  if ! mysqladmin ping >/dev/null 2>&1; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (setsid mysqld_safe >/dev/null 2>&1 &)
    wait_for 60 MariaDB mysqladmin ping
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start() {
  [ "$(id -u)" = 0 ] || { say "start needs root"; exit 1; }
  command -v slurmctld >/dev/null || { say "Slurm is not installed: run '$0 install' first"; exit 1; }
  write_configs
  if status >/dev/null 2>&1; then
    scontrol reconfigure
    say "already running: cluster $CLUSTER, node $NODE (configuration re-read)"
    return
  fi
  start_munge
  start_mariadb
  pgrep -x slurmdbd >/dev/null || slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  pgrep -x slurmctld >/dev/null || slurmctld
  wait_for 30 slurmctld scontrol ping
  pgrep -x slurmd >/dev/null || slurmd
  wait_for 60 "an idle node" sh -c "sinfo -h -n $NODE -o %t | grep -qx idle"
  say "up: cluster $CLUSTER, node $NODE ($(nproc) CPUs), accounting by slurmdbd"
}

status() {
  scontrol ping | grep -q UP && sinfo -h -n "$NODE" -o %t | grep -qE '^(idle|mix|alloc)' && sacct -n -X -S now >/dev/null
}

stop() {
  scancel --user=root 2>/dev/null || true
  for daemon in slurmd slurmctld slurmdbd; do pkill -x "$daemon" 2>/dev/null || true; done
  mysqladmin shutdown 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  say "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  status) if status; then say "up: cluster $CLUSTER, node $NODE"; else say "not running"; exit 1; fi ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|status|stop" >&2; exit 2 ;;
esac
