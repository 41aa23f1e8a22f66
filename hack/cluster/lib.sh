# Helpers shared by up.sh and down.sh (sourced after env.sh; expects PIDS,
# LOGS and HOSTREC to be set).

# The daemons up.sh starts, in start order.
DAEMONS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

# starttime PID: the process's start time in clock ticks since boot (field 22
# of /proc/PID/stat). Recorded with the PID, it tells our daemon from an
# unrelated process that got the same PID after ours died.
starttime() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }  # the command name in (...) may hold spaces
  # shellcheck disable=SC2086
  set -- $s
  echo "${20}"
}

# running PID: the process exists and is not a zombie (an exited daemon stays
# one until this machine's init reaps it, which can take a second or two).
running() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) && s=${s##*) } && [ "${s%% *}" != Z ]
}

# recorded NAME: succeeds if the daemon NAME that up.sh recorded still runs; prints its PID.
recorded() {
  local pid st
  read -r pid st <"$PIDS/$1" 2>/dev/null || return 1
  [ -n "$pid" ] && [ -n "$st" ] && [ "$(starttime "$pid")" = "$st" ] && running "$pid" && echo "$pid"
}

# dead_daemons: the names of the daemons that are not running (all of them if none was recorded).
dead_daemons() {
  local n out=()
  for n in "${DAEMONS[@]}"; do recorded "$n" >/dev/null || out+=("$n"); done
  echo "${out[*]}"
}

# start NAME CMD...: runs CMD in a session of its own (no terminal, survives
# the script), output to $LOGS/NAME.log, and records "PID STARTTIME". It gets
# no other descriptor of ours: not the up.sh lock (fd 8), not a caller's pipe
# (a test that reads up.sh's output would otherwise wait for the daemons).
start() {
  local n=$1 pid
  shift
  setsid "$@" >>"$LOGS/$n.log" 2>&1 </dev/null 8>&- &
  pid=$!
  echo "$pid $(starttime "$pid")" >"$PIDS/$n"
  STARTED+=("$n")
}
STARTED=()

# wait_for SECONDS WHAT CMD...: polls CMD until it succeeds. Fails at once,
# with the end of its log, if a daemon started so far has exited.
wait_for() {
  local t=$1 what=$2 n end
  shift 2
  end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    for n in "${STARTED[@]}"; do
      recorded "$n" >/dev/null && continue
      echo "up.sh: $n exited while waiting for $what; the end of $LOGS/$n.log:" >&2
      tail -n 25 "$LOGS/$n.log" >&2
      exit 1
    done
    if [ $SECONDS -ge $end ]; then
      echo "up.sh: timed out after ${t}s waiting for $what (logs in $LOGS)" >&2
      exit 1
    fi
    sleep 0.3
  done
  log "$what"
}

# restore_sysctls FILE: writes back the kernel settings recorded in FILE (k=v lines).
restore_sysctls() {
  local k v
  [ -f "$1" ] || return 0
  while IFS='=' read -r k v; do
    [ "$(sysctl -n "$k" 2>/dev/null)" = "$v" ] || sysctl -qw "$k=$v"
  done <"$1"
}
