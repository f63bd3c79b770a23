#!/usr/bin/env bash
# A real one-node Slurm cluster with accounting on this machine -- munge, MariaDB, slurmdbd, slurmctld
# and slurmd -- as root, without systemd (containers have none). The cluster tests use it; so can anyone
# who wants to try `hydra/launcher=slurm` without a cluster.
#
# It lives in its own prefix and touches nothing else: its own configuration (SLURM_CONF), state, logs
# and pid files, its own munge key and socket, its own MariaDB data directory and socket, and its own
# ports. A Slurm already on the machine (/etc/slurm, its daemons, its munge, its database) is left as it
# is; this script starts, stops and reconfigures only the daemons whose pid files it wrote.
#
#   scripts/local_slurm.sh install   # Debian packages (root; about two minutes)
#   scripts/local_slurm.sh start     # writes $PREFIX/etc/*.conf, starts every daemon, waits for an idle node
#   scripts/local_slurm.sh status    # exit 0 when the node answers and accounting works
#   scripts/local_slurm.sh env       # the SLURM_CONF line for a shell: eval "$(scripts/local_slurm.sh env)"
#   scripts/local_slurm.sh stop-accounting   # stops its slurmdbd only (a cluster whose accounting is down)
#   scripts/local_slurm.sh stop      # cancels its jobs, stops its daemons
#
# Settings a container needs: proctrack/linuxproc and task/none (no cgroups), SlurmUser=root.
# KillWait is 2 s: submitit's jobs ignore SIGTERM, so a cancelled or requeued task is killed 2 s later.
set -euo pipefail

PREFIX=${ACCEL_BENCH_SLURM_PREFIX:-/var/lib/accel_bench_slurm}
CLUSTER=${ACCEL_BENCH_SLURM_CLUSTER:-accelbench}
PORT_BASE=${ACCEL_BENCH_SLURM_PORT_BASE:-16810}   # slurmctld +7, slurmd +8, slurmdbd +9, MariaDB +6
NODE=$(hostname -s)
DB_PASSWORD=accel_bench_local_slurm
ETC=$PREFIX/etc RUN=$PREFIX/run LOG=$PREFIX/log
MUNGE_SOCKET=$PREFIX/munge-socket/munge.socket
DB_DIR=$PREFIX/mysql DB_RUN=$PREFIX/mysql-run DB_PORT=$((PORT_BASE + 6))
DB_SOCKET=$DB_RUN/mysqld.sock
export SLURM_CONF=$ETC/slurm.conf

say() { echo "[local_slurm] $*"; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$((seconds * 5))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  say "gave up waiting for $what after ${seconds} s (logs: $LOG)"
  return 1
}

pid_file() {  # each daemon's pid file, in a folder its own user owns (munged refuses any other)
  case $1 in
    munged) echo "$PREFIX/munge-socket/munged.pid" ;;
    mariadbd) echo "$DB_RUN/mariadbd.pid" ;;
    *) echo "$RUN/$1.pid" ;;
  esac
}

running() {  # running NAME: its pid file names a live process
  local file
  file=$(pid_file "$1")
  [ -s "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null
}

stop_daemon() {  # stop_daemon NAME: only the process its pid file names
  if running "$1"; then
    local pid
    pid=$(cat "$(pid_file "$1")")
    kill "$pid" 2>/dev/null || true
    wait_for 20 "$1 to stop" sh -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$(pid_file "$1")"
}

sql() { mysql --no-defaults --socket="$DB_SOCKET" -u root "$@"; }

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
  mkdir -p "$ETC" "$RUN" "$LOG" "$PREFIX/state/slurmctld" "$PREFIX/state/slurmd"
  cat >"$ETC/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmctldPort=$((PORT_BASE + 7))
SlurmdPort=$((PORT_BASE + 8))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge=300
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$PREFIX/state/slurmctld
SlurmdSpoolDir=$PREFIX/state/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT_BASE + 9))
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  cat >"$ETC/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$((PORT_BASE + 9))
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$ETC/slurmdbd.conf"
}

start_munge() {
  if munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; then return; fi
  mkdir -p "$PREFIX/munge" "$PREFIX/munge-socket"
  chown munge:munge "$PREFIX/munge" "$PREFIX/munge-socket" && chmod 700 "$PREFIX/munge" && chmod 755 "$PREFIX/munge-socket"
  [ -s "$PREFIX/munge/munge.key" ] || runuser -u munge -- mungekey --create --keyfile="$PREFIX/munge/munge.key"
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$PREFIX/munge/munge.key" --pid-file="$(pid_file munged)" \
    --log-file="$PREFIX/munge/munged.log" --seed-file="$PREFIX/munge/munged.seed"
  wait_for 10 munge sh -c "munge -n --socket=$MUNGE_SOCKET | unmunge --socket=$MUNGE_SOCKET"
}

start_mariadb() {
  if ! sql -e "SELECT 1" >/dev/null 2>&1; then
    if [ ! -d "$DB_DIR/mysql" ]; then
      mkdir -p "$DB_DIR" && chown mysql:mysql "$DB_DIR"
      mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1
    fi
    mkdir -p "$DB_RUN" && chown mysql:mysql "$DB_RUN"
    (setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" --socket="$DB_SOCKET" --port="$DB_PORT" \
      --bind-address=127.0.0.1 --pid-file="$(pid_file mariadbd)" --log-error="$LOG/mariadbd.log" >/dev/null 2>&1 &)
    wait_for 60 MariaDB sql -e "SELECT 1"
  fi
  sql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
          CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

start() {
  [ "$(id -u)" = 0 ] || { say "start needs root"; exit 1; }
  command -v slurmctld >/dev/null || { say "Slurm is not installed: run '$0 install' first"; exit 1; }
  write_configs
  if status >/dev/null 2>&1; then
    scontrol reconfigure
    say "already running: cluster $CLUSTER, node $NODE (configuration re-read); SLURM_CONF=$SLURM_CONF"
    return
  fi
  start_munge
  start_mariadb
  running slurmdbd || slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  running slurmctld || slurmctld -f "$SLURM_CONF"
  wait_for 30 slurmctld scontrol ping
  running slurmd || slurmd -f "$SLURM_CONF"
  wait_for 60 "an idle node" sh -c "sinfo -h -n $NODE -o %t | grep -qx idle"
  say "up: cluster $CLUSTER, node $NODE ($(nproc) CPUs), accounting by slurmdbd; SLURM_CONF=$SLURM_CONF"
}

status() {
  [ -s "$SLURM_CONF" ] && scontrol ping | grep -q UP && sinfo -h -n "$NODE" -o %t | grep -qE '^(idle|mix|alloc)' && sacct -n -X -S now >/dev/null
}

stop() {
  if running slurmctld; then scancel --user=root 2>/dev/null || true; fi
  for daemon in slurmd slurmctld slurmdbd; do stop_daemon "$daemon"; done
  if running mariadbd; then mysqladmin --no-defaults --socket="$DB_SOCKET" -u root shutdown 2>/dev/null || stop_daemon mariadbd; fi
  stop_daemon munged
  say "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  status) if status; then say "up: cluster $CLUSTER, node $NODE; SLURM_CONF=$SLURM_CONF"; else say "not running"; exit 1; fi ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  stop-accounting) stop_daemon slurmdbd ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|status|env|stop-accounting|stop" >&2; exit 2 ;;
esac
