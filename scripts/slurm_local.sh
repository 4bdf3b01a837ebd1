#!/usr/bin/env bash
# A single-node Slurm (with accounting) on this Debian machine, for the cluster tests
# (tests/test_slurm.py) and benchmarks:
#   scripts/slurm_local.sh start   # install if missing, configure, start; waits for sinfo idle
#   scripts/slurm_local.sh stop    # stops only the daemons this script started (its pid files)
# As root, without systemd or cgroups: each daemon is started by hand with a pid file under
# $RUN. Settings that make it usable here (issue 35):
# - proctrack/linuxproc, task/none, jobacct_gather/none: no cgroups;
# - accounting through slurmdbd on MariaDB: without it submitit cannot see a task that died
#   without a result (job.result() waits for ever);
# - cred_expire=10 and 5 s scheduling intervals: a requeued task starts again in seconds, not
#   after 120 s.
set -euo pipefail

RUN=/run/regexp-slurm                 # pid files and sockets of what this script started
SPOOL=/var/spool/regexp-slurm
ETC=/etc/slurm
CLUSTER=regexp
DB_SOCKET=$RUN/mysqld.sock

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

install() {
  local missing=()
  for cmd in slurmctld slurmd sinfo munged slurmdbd mariadbd; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] && return
  command -v apt-get >/dev/null || die "needs apt-get to install ${missing[*]}"
  [ "$(id -u)" = 0 ] || die "needs root to install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge \
    slurmdbd mariadb-server >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null; }
}

configure() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)
  mkdir -p "$ETC" "$RUN" "$SPOOL"/ctld "$SPOOL"/d /var/log/slurm
  cat >"$ETC/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=5,bf_interval=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MaxArraySize=1001
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=root
EOF
  chmod 600 "$ETC/slurmdbd.conf"
  # munge: its key, and its run dir owned by its user
  [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge && dd if=/dev/urandom bs=1 count=1024 \
    of=/etc/munge/munge.key 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
}

started() {  # is the daemon of pid file $1 running?
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return; sleep 0.25; done
  die "$what did not come up in ${seconds} s (see /var/log/slurm/)"
}

start() {
  install
  configure
  started "$RUN/munged.pid" || {
    # as the munge user, which owns its key and socket; its pid file goes where that user
    # may write it, and a copy into $RUN with the others
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged
    wait_for 10 munged test -s /run/munge/munged.pid
    cp /run/munge/munged.pid "$RUN/munged.pid"
  }
  started "$RUN/mysqld.pid" || {
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    # (mariadbd, as the mysql user, writes its pid file and socket into $RUN; slurmdbd finds
    # the socket at MariaDB's default path, a link)
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld "$RUN"
    chmod 755 "$RUN"
    # (in a session of its own, as the other daemons put themselves: the shell that started
    # it may end, its process group with it, and the cluster must go on)
    setsid mariadbd --user=mysql --pid-file="$RUN/mysqld.pid" --socket="$DB_SOCKET" \
      --skip-networking=0 --bind-address=127.0.0.1 --log-error="$RUN/mariadb.log" \
      </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadb mariadb --socket="$DB_SOCKET" -e "select 1"
    ln -sf "$DB_SOCKET" /run/mysqld/mysqld.sock
  }
  started "$RUN/slurmdbd.pid" || {
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -i list cluster
  }
  sacctmgr -i list cluster -n format=cluster | grep -qw "$CLUSTER" ||
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  started "$RUN/slurmctld.pid" || slurmctld
  wait_for 30 slurmctld scontrol ping
  started "$RUN/slurmd.pid" || slurmd
  scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
  wait_for 60 "an idle node" sh -c 'sinfo -h -o %T | grep -qx idle'
  echo "slurm: $(sinfo -h -o '%P %D %c %T') (cluster $CLUSTER, accounting on)"
}

stop() {
  local name pid
  for name in slurmd slurmctld slurmdbd mysqld munged; do
    started "$RUN/$name.pid" || continue
    pid=$(cat "$RUN/$name.pid")
    kill "$pid"
    for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$RUN/$name.pid"
  done
  echo "slurm: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
