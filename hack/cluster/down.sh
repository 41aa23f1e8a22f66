#!/usr/bin/env bash
# Tears down what up.sh made, by what it recorded in $CLUSTER_STATE: its
# processes (PID and start time, so a reused PID is never signalled), pods and
# their containerd shims, mounts, cgroups, iptables rules, bridges, kernel
# settings and host directories. Works after a crash too (processes killed -9,
# a half-finished up.sh): containerd is started again for a moment when pods
# were left running, so their sandboxes are removed the normal way (CNI DEL).
# Keeps the cached binaries and images; the cluster's logs are kept in
# $TOKENSTORE_CLUSTER_HOME/last-logs.
#
# Best effort: every step runs even if an earlier one failed. At the end it
# checks that nothing is left and exits non-zero, naming what is, if anything is.
#
# usage: hack/cluster/down.sh     (root)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
PIDS=$CLUSTER_STATE/pids ETC=$CLUSTER_STATE/etc LOGS=$CLUSTER_STATE/logs HOSTREC=$CLUSTER_STATE/host
source "$here/lib.sh"
T0=$(date +%s.%N)
log() { awk -v a="$T0" -v b="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "[down %5.1fs] %s\n", b-a, m}' >&2; }
warn() { echo "down.sh: WARNING: $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "down.sh: must run as root: sudo $0" >&2; exit 1; }
if [ -z "${CLUSTER_LOCK_HELD:-}" ]; then  # up.sh holds it when it runs down.sh
  mkdir -p "$TOKENSTORE_CLUSTER_HOME"
  exec 8>"$TOKENSTORE_CLUSTER_HOME/lock"
  flock -n 8 || { log "another up.sh or down.sh is running; waiting for it"; flock 8; }
fi

K8S_BIN=$(cat "$CLUSTER_STATE/k8s-bin" 2>/dev/null || true)
if [ ! -d "$CLUSTER_STATE" ]; then
  log "no cluster state in $CLUSTER_STATE: nothing was recorded; checking for leftovers by name only"
fi

# stop SIGNAL NAME...: SIGNAL to each recorded daemon still running, up to 20 s to exit, then SIGKILL.
stop() {
  local sig=$1 n pid pids=() alive i
  shift
  for n in "$@"; do
    pid=$(recorded "$n") && kill "-$sig" "$pid" 2>/dev/null && pids+=("$pid")
  done
  for ((i = 0; i < 200 && ${#pids[@]} > 0; i++)); do
    alive=()
    for pid in "${pids[@]}"; do running "$pid" && alive+=("$pid"); done
    pids=("${alive[@]}")
    [ ${#pids[@]} -eq 0 ] || sleep 0.1
  done
  for pid in "${pids[@]}"; do warn "pid $pid did not exit within 20 s of SIG$sig: SIGKILL"; kill -KILL "$pid" 2>/dev/null; done
  for n in "$@"; do rm -f "$PIDS/$n"; done
  log "stopped $*"
}
crictl_() { [ -x "$K8S_BIN/crictl" ] && "$K8S_BIN/crictl" --runtime-endpoint "unix://$CLUSTER_SOCK" --timeout 30s "$@"; }

# 1. The kubelet first, so nothing restarts containers; then every pod sandbox
#    through CRI: stops its containers, runs CNI DEL (veth, IP), unmounts its
#    netns/shm, and lets its shim exit.
stop TERM kubelet
# our_shims: the PIDs of the containerd shims serving this cluster's containerd
# (their command line names its socket, which no other containerd uses).
our_shims() {
  local d
  for d in /proc/[0-9]*; do
    { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -q "^/usr/bin/containerd-shim[^ ]* .*-address $CLUSTER_SOCK " && echo "${d#/proc/}"
  done
  return 0
}
if ! recorded containerd >/dev/null && [ -n "$(our_shims)" ] && [ -f "$ETC/containerd.toml" ]; then
  log "containerd is gone but its pods are not: starting it again to remove them"
  mkdir -p "$LOGS" "$PIDS" && start containerd /usr/bin/containerd --config "$ETC/containerd.toml"
  for ((i = 0; i < 100; i++)); do ctr -a "$CLUSTER_SOCK" version >/dev/null 2>&1 && break; sleep 0.2; done
fi
if recorded containerd >/dev/null; then
  crictl_ rmp -fa >/dev/null 2>&1 || warn "crictl rmp -fa failed"
  left=$(crictl_ pods -q 2>/dev/null | wc -l)
  [ "$left" = 0 ] && log "pod sandboxes removed" || warn "$left pod sandboxes left after crictl rmp -fa"
fi
# The control plane's state is deleted below: a graceful stop would only cost
# time (the API server takes about 3 s, etcd 2 s). containerd gets SIGTERM
# (it leaves the shims alone either way; they are gone by now).
stop TERM containerd
stop KILL kube-proxy kube-scheduler kube-controller-manager
# Left only if containerd could not remove the pods: their processes (all
# that is in the kubepods cgroups this cluster's kubelet created), then the shims.
while read -r cg; do
  [ -n "$cg" ] || continue
  for procs in $(find "$cg" -name cgroup.procs 2>/dev/null); do
    for p in $(cat "$procs" 2>/dev/null); do
      warn "killing leftover pod process $p ($({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | cut -c1-60))"; kill -KILL "$p" 2>/dev/null
    done
  done
done <"$HOSTREC/created-cgroups" 2>/dev/null
for p in $(our_shims); do warn "killing leftover containerd shim $p"; kill -KILL "$p" 2>/dev/null; done
# kube-proxy removes its own rules (needs no API server).
if [ -f "$ETC/kube-proxy.yaml" ] && [ -x "$K8S_BIN/kube-proxy" ]; then
  "$K8S_BIN/kube-proxy" --cleanup --v=0 >/dev/null 2>&1 || true
fi
stop KILL kube-apiserver etcd
log "processes stopped"

# 2. Mounts under the state directories: the kubelet's rshared root, projected
#    token and secret tmpfs, leftover rootfs/shm/netns. Deepest first.
for i in 1 2 3; do
  findmnt -rn -o TARGET | grep -E "^($CLUSTER_STATE|$CLUSTER_RUN)(/|$)" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "cannot unmount $m"
  done
done

# 3. cgroups the kubelet/runc created (cgroupfs driver: */kubepods).
while read -r cg; do
  [ -n "$cg" ] && [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ -z "$cg" ] || [ ! -d "$cg" ] || warn "cgroup $cg still exists (a process still in it?)"
done <"$HOSTREC/created-cgroups" 2>/dev/null

# 4. iptables. kube-proxy --cleanup took its rules; the kubelet's KUBE-FIREWALL,
#    KUBE-KUBELET-CANARY and the like remain. Swept only if the host had no
#    KUBE-* chains before up.sh (then they are all this cluster's).
before=$(cat "$HOSTREC/kube-chains-before" 2>/dev/null || echo unknown)
if [ "$before" = 0 ]; then
  for ipt in iptables ip6tables; do
    for t in filter nat mangle; do
      $ipt -t $t -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' | sed 's/^-A /-D /' |
        while read -r r; do eval "$ipt -t $t $r" || warn "$ipt -t $t $r failed"; done
      for c in $($ipt -t $t -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do $ipt -t $t -F "$c"; done
      for c in $($ipt -t $t -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do $ipt -t $t -X "$c" || warn "cannot delete $ipt -t $t chain $c"; done
    done
  done
elif [ -d "$CLUSTER_STATE" ]; then
  warn "the host had $before KUBE-* iptables chains before up.sh: left to their owner (kube-proxy --cleanup removed this cluster's)"
fi
guard=(FORWARD -i "$CLUSTER_POD_BR" ! -o "$CLUSTER_POD_BR" -m comment --comment tokenstore-cluster-guard -j DROP)
while iptables -t mangle -D "${guard[@]}" 2>/dev/null; do :; done
log "iptables cleaned"

# 5. Links: veths left on cni0 (CNI DEL removes them normally), then the two
#    bridges; the Service route and cni0's forwarding sysctl go with them.
for v in $(ip -o link show master "$CLUSTER_POD_BR" type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  ip link del "$v" || warn "cannot delete veth $v"
done
for l in "$CLUSTER_POD_BR" "$CLUSTER_NODE_BR"; do
  # Without state, only a bridge that is recognisably this cluster's (its address) is deleted.
  if ip link show "$l" >/dev/null 2>&1; then
    if grep -qx "$l" "$HOSTREC/links" 2>/dev/null || ip -o addr show dev "$l" | grep -qE "inet ($CLUSTER_NODE_IP|$CLUSTER_POD_GW)/"; then
      ip link del "$l" || warn "cannot delete link $l"
    else
      warn "$l exists but was not made by up.sh: left alone"
    fi
  fi
done

# 6. Kernel settings (up.sh already restored the kubelet's once the node was Ready).
restore_sysctls "$HOSTREC/sysctl-kubelet" || warn "could not restore $(cat "$HOSTREC/sysctl-kubelet")"
restore_sysctls "$HOSTREC/sysctl-up" || warn "could not restore $(cat "$HOSTREC/sysctl-up")"

# 7. Host directories that did not exist before up.sh (libcni's cache, the
#    kubelet's hard-coded device-plugin dir, containerd's shim socket dir, ...).
while read -r d; do
  [[ "$d" == /* ]] && rm -rf "$d"
done <"$HOSTREC/created-dirs" 2>/dev/null
find /var/log/containers -maxdepth 1 -type l -lname "$CLUSTER_STATE/*" -delete 2>/dev/null

if [ -d "$LOGS" ]; then
  rm -rf "$TOKENSTORE_CLUSTER_HOME/last-logs" && cp -r "$LOGS" "$TOKENSTORE_CLUSTER_HOME/last-logs"
fi
rm -rf "$CLUSTER_STATE" "$CLUSTER_RUN" || warn "cannot remove $CLUSTER_STATE or $CLUSTER_RUN"

# 8. Nothing may be left.
left=()
[ -z "$(our_shims)" ] || left+=("containerd shims $(our_shims | tr '\n' ' ')")
findmnt -rn -o TARGET | grep -qE "^($CLUSTER_STATE|$CLUSTER_RUN)(/|$)" && left+=("mounts under the state directories")
for l in "$CLUSTER_POD_BR" "$CLUSTER_NODE_BR"; do ip link show "$l" >/dev/null 2>&1 && left+=("link $l"); done
[ "$before" != 0 ] || ! iptables-save 2>/dev/null | grep -q 'KUBE-' || left+=("iptables KUBE-* rules")
iptables-save -t mangle 2>/dev/null | grep -q tokenstore-cluster-guard && left+=("the iptables guard rule")
for p in $CLUSTER_APISERVER_PORT $CLUSTER_ETCD_PORT $CLUSTER_ETCD_PEER_PORT $CLUSTER_KUBELET_PORT $CLUSTER_KUBELET_HEALTHZ_PORT \
         $CLUSTER_KCM_PORT $CLUSTER_SCHED_PORT $CLUSTER_PROXY_METRICS_PORT $CLUSTER_PROXY_HEALTHZ_PORT; do
  [ -z "$(ss -Hltn "sport = :$p")" ] || left+=("a listener on port $p: $(ss -Hltnp "sport = :$p" | grep -o 'users:.*')")
done
if [ ${#left[@]} -gt 0 ]; then
  echo "down.sh: NOT CLEAN, left behind: $(IFS=';'; echo "${left[*]}")" >&2
  exit 1
fi
log "done: no processes, mounts, links, iptables rules or listeners of the cluster left (logs kept in $TOKENSTORE_CLUSTER_HOME/last-logs)"
