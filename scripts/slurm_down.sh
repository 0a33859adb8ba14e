#!/usr/bin/env bash
# Stop the daemons that slurm_up.sh started (listed in $STATE/started), newest first, by pid file only.
# SIGTERM, up to 5 s, then SIGKILL (a slurmd that lost its controller can hang on TERM).
set -u
STATE=${LRTRANSFER_SLURM_STATE:-/tmp/lrtransfer-slurm}
[ -f "$STATE/started" ] || { echo "slurm_down: nothing was started by slurm_up.sh"; exit 0; }
alive() { [ -r "/proc/$1/stat" ] && ! awk '{exit !($3=="Z")}' "/proc/$1/stat"; }
tac "$STATE/started" | while read -r name pidfile; do
  [ -n "$name" ] || continue
  pid=$(cat "$pidfile" 2>/dev/null) || continue
  [ -n "$pid" ] && alive "$pid" || continue
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  echo "slurm_down: stopped $name ($pid)"
done
rm -f "$STATE/started"
