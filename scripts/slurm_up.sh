#!/usr/bin/env bash
# Bring up a single-node Slurm on localhost for tests: munge, MariaDB + slurmdbd (real job states for
# sacct), slurmctld, slurmd. Debian 12, as root, no systemd. Installs the Debian packages if missing.
# Records every daemon it starts in $STATE/started so that slurm_down.sh stops exactly those (by pid).
# A Slurm that is already answering is left alone. Usage: scripts/slurm_up.sh   (WITH_DBD=0 to skip MariaDB)
set -euo pipefail
STATE=${LRTRANSFER_SLURM_STATE:-/tmp/lrtransfer-slurm}
WITH_DBD=${WITH_DBD:-1}
MARK="# written by lrtransfer scripts/slurm_up.sh"
mkdir -p "$STATE"
touch "$STATE/started"

alive() { local p; p=$(cat "$1" 2>/dev/null) || return 1; [ -n "$p" ] && [ -r "/proc/$p/stat" ] && ! awk '{exit !($3=="Z")}' "/proc/$p/stat"; }
controller_up() { timeout 3 bash -c '</dev/tcp/127.0.0.1/6817' 2>/dev/null && timeout 5 sinfo -h >/dev/null 2>&1; }
# start NAME PIDFILE CMD...: run a daemon unless its pid file names a live process; remember it.
start() { local name=$1 pidfile=$2; shift 2
  alive "$pidfile" && return 0
  "$@"
  echo "$name $pidfile" >> "$STATE/started"; }

if command -v sinfo >/dev/null && controller_up; then
  echo "slurm: a controller already answers on 127.0.0.1:6817; leaving it alone"; exit 0
fi
[ "$(id -u)" = 0 ] || { echo "slurm_up: must run as root to start daemons" >&2; exit 1; }

pkgs="munge slurmctld slurmd slurm-client"
[ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
if ! dpkg -s $pkgs >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [ -f /etc/slurm/slurm.conf ] && ! grep -q "$MARK" /etc/slurm/slurm.conf; then
  echo "slurm_up: /etc/slurm/slurm.conf exists and is not ours; refusing to overwrite it" >&2; exit 1
fi
acct="AccountingStorageType=accounting_storage/none"
[ "$WITH_DBD" = 1 ] && acct=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nAccountingStoragePort=6819'
mem_mb=$(( $(free -m | awk '/^Mem:/{print $2}') * 85 / 100 ))
cat > /etc/slurm/slurm.conf <<CONF
$MARK
ClusterName=lrtransfer
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Requeued jobs wait cred_expire seconds before they may start again (default 120).
AuthInfo=cred_expire=10
MpiDefault=none
# No cgroups in containers: track processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
$acct
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Start array tasks at once instead of every 3 s.
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Jobs without --mem would otherwise take the whole node and run one at a time.
DefMemPerCPU=1000
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
start munged /run/munge/munged.pid runuser -u munge -- /usr/sbin/munged
for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done

if [ "$WITH_DBD" = 1 ]; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! alive /run/mysqld/mysqld.pid; then
    (/usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
      >/var/log/slurm/mariadb.log 2>&1 &)
    echo "mariadbd /run/mysqld/mysqld.pid" >> "$STATE/started"
  fi
  for _ in $(seq 100); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
              CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<CONF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  start slurmdbd /run/slurmdbd.pid /usr/sbin/slurmdbd
  for _ in $(seq 100); do timeout 1 bash -c '</dev/tcp/127.0.0.1/6819' 2>/dev/null && break; sleep 0.1; done
fi
start slurmctld /run/slurmctld.pid /usr/sbin/slurmctld
start slurmd /run/slurmd.pid /usr/sbin/slurmd
for _ in $(seq 60); do timeout 2 sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 0.5; done
timeout 5 sinfo -h -o %T | grep -qx idle || { echo "slurm did not come up; see /var/log/slurm/*.log" >&2; exit 1; }
echo "slurm: up ($(timeout 5 sinfo -h -o '%P %D %T' | head -1))"
