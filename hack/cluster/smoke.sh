#!/usr/bin/env bash
# Proves the local cluster end to end on this machine, then leaves it down:
#   up.sh -> node Ready; up.sh again says "already up"
#   a multi-arch OCI archive loaded with load-image.sh -> a pod Ready through its probe
#   a projected ServiceAccount token (custom audience) passes TokenReview, a wrong audience fails
#   in a pod: a Service name resolves (CoreDNS) and answers; the host answers at 10.245.0.1;
#   nothing outside is reachable; from the host: pod IP and ClusterIP answer
#   the cluster listens only on loopback and 10.245.0.1
#   crash: every daemon killed -9, up.sh cleans up by itself and comes up again
#   down.sh -> no processes, links, mounts, iptables KUBE-* rules or listeners left
#
# usage: hack/cluster/smoke.sh     (root; about 2-3 minutes with cached binaries;
#                                   KEEP=1 leaves the cluster up when a check fails)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
source "$here/lib.sh"   # running PID
export PATH=/usr/local/go/bin:$PATH
ns=smoke image=ghcr.io/tokenstore/smoke:1 audience=smoke-audience host_port=18999
ok() { echo "smoke: ok: $*"; }
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
secs() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
tmp=$(mktemp -d)
host_pid=""
cleanup() {
  rc=$?
  [ -z "$host_pid" ] || kill "$host_pid" 2>/dev/null || true
  rm -rf "$tmp"
  if [ $rc != 0 ]; then
    if [ "${KEEP:-}" = 1 ]; then echo "smoke: KEEP=1: cluster left up (hack/cluster/down.sh removes it)" >&2
    elif [ -d "$CLUSTER_STATE" ]; then "$here/down.sh" >&2 || true; fi
  fi
}
trap cleanup EXIT
ip_forward=$(sysctl -n net.ipv4.ip_forward)

# ---- up, twice ----
t=$(date +%s.%N)
"$here/up.sh" >"$tmp/kubeconfig" || fail "up.sh"
[ "$(cat "$tmp/kubeconfig")" = "$KUBECONFIG" ] || fail "up.sh printed $(cat "$tmp/kubeconfig"), not $KUBECONFIG"
ok "up.sh: cluster up in $(secs "$t") s"
kubectl wait "node/$CLUSTER_NODE_NAME" --for=condition=Ready --timeout=10s >/dev/null || fail "node not Ready"
ok "node Ready: $(kubectl get node "$CLUSTER_NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}')"
"$here/up.sh" 2>"$tmp/again" >/dev/null || fail "second up.sh: $(cat "$tmp/again")"
grep -q 'already up' "$tmp/again" && ok "second up.sh: $(sed 's/^\[up *[0-9.]*s\] //' "$tmp/again")" || fail "second up.sh did not say 'already up': $(cat "$tmp/again")"

# ---- a multi-arch image, loaded without a registry ----
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp/smoke" ./smoke &&
  CGO_ENABLED=0 GOARCH=arm64 go build -trimpath -ldflags='-s -w' -o "$tmp/smoke-arm64" ./smoke) || fail "go build ./smoke"
python3 "$here/mkimage.py" --name "$image" --out "$tmp/smoke.tar" --entrypoint /smoke --cmd serve :8080 \
  --user 65532:65532 --platform "linux/arm64=$tmp/smoke-arm64" "$tmp/smoke:/smoke" >/dev/null
"$here/load-image.sh" "$tmp/smoke.tar" 2>/dev/null | grep -q "loaded $image" || fail "load-image.sh $tmp/smoke.tar"
ok "load-image.sh: multi-arch OCI archive (linux/amd64, linux/arm64) imported as $image"

# ---- a Deployment with a probe and a projected token, and its Service ----
kubectl create namespace $ns >/dev/null
kubectl -n $ns apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      securityContext: {runAsNonRoot: true, runAsUser: 65532}
      containers:
      - name: web
        image: $image
        imagePullPolicy: IfNotPresent
        env: [{name: TOKEN_FILE, value: /var/run/secrets/tokens/token}]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
        volumeMounts: [{name: token, mountPath: /var/run/secrets/tokens, readOnly: true}]
      volumes:
      - name: token
        projected:
          sources: [{serviceAccountToken: {path: token, audience: $audience, expirationSeconds: 3600}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
t=$(date +%s.%N)
kubectl -n $ns wait deploy/web --for=condition=Available --timeout=120s >/dev/null ||
  { kubectl -n $ns describe pods >&2; fail "deployment web not Available"; }
ok "pod from $image Ready through its readiness probe ($(secs "$t") s after apply)"
pod_ip=$(kubectl -n $ns get pods -l app=web -o jsonpath='{.items[0].status.podIP}')
cluster_ip=$(kubectl -n $ns get svc web -o jsonpath='{.spec.clusterIP}')
out=$(curl -fsS -m 5 "http://$pod_ip:8080/") && ok "host -> pod IP $pod_ip: $out" || fail "host -> pod IP $pod_ip"
# kube-proxy writes the Service's rules within about a second of the endpoint turning ready.
out=$(curl -fs -m 5 --retry 10 --retry-connrefused --retry-delay 1 "http://$cluster_ip/") && ok "host -> ClusterIP $cluster_ip (kube-proxy): $out" || fail "host -> ClusterIP $cluster_ip"

# ---- TokenReview of the projected token ----
token=$(curl -fsS -m 5 "http://$pod_ip:8080/token") || fail "reading the projected token from the pod"
review() {
  kubectl create -o jsonpath='{.status.authenticated}|{.status.user.username}|{.status.error}' -f - <<EOF
apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec: {token: "$token", audiences: ["$1"]}
EOF
}
r=$(review $audience)
[[ "$r" == "true|system:serviceaccount:$ns:web|" ]] && ok "TokenReview, audience $audience: $r" || fail "TokenReview, audience $audience: $r"
r=$(review other-audience)
[[ "$r" != true* && "$r" == *"invalid for the target audiences"* ]] && ok "TokenReview, wrong audience refused: ${r##*|}" ||
  fail "TokenReview accepted or failed oddly for a wrong audience: $r"

# ---- from pods: cluster DNS, the host at 10.245.0.1, nothing beyond ----
"$tmp/smoke" serve "$CLUSTER_NODE_IP:$host_port" >/dev/null 2>&1 &
host_pid=$!
run_pod() { # run_pod NAME ARGS...: a one-shot pod of the smoke image
  local n=$1; shift
  kubectl -n $ns run "$n" --image=$image --image-pull-policy=IfNotPresent --restart=Never \
    --overrides='{"spec":{"securityContext":{"runAsNonRoot":true,"runAsUser":65532}}}' --command -- /smoke "$@" >/dev/null
}
run_pod dns resolve web.$ns.svc 30
run_pod svc get http://web.$ns.svc/ 30
run_pod host get "http://$CLUSTER_NODE_IP:$host_port/healthz" 30
run_pod outside get http://1.1.1.1/ 1
for p in dns svc host; do
  kubectl -n $ns wait pod/$p --for=jsonpath='{.status.phase}'=Succeeded --timeout=90s >/dev/null ||
    fail "pod $p: $(kubectl -n $ns logs $p 2>&1 | tail -3)"
done
ok "in a pod, web.$ns.svc resolves: $(kubectl -n $ns logs dns)"
ok "in a pod, http://web.$ns.svc/ answers: $(kubectl -n $ns logs svc)"
ok "in a pod, the host answers at $CLUSTER_NODE_IP:$host_port: $(kubectl -n $ns logs host)"
kubectl -n $ns wait pod/outside --for=jsonpath='{.status.phase}'=Failed --timeout=60s >/dev/null ||
  fail "a pod reached 1.1.1.1: $(kubectl -n $ns logs outside 2>&1)"
ok "in a pod, 1.1.1.1 is unreachable: $(kubectl -n $ns logs outside)"
kill "$host_pid"; host_pid=""

# ---- the cluster's listeners: loopback and the node address only ----
pids=$(for f in "$CLUSTER_STATE"/pids/*; do read -r p _ <"$f"; echo "$p"; done)
bad=$(ss -Hltunp | grep -E "pid=($(echo $pids | tr ' ' '|'))," | awk '{print $5}' | grep -vE "^(127\.0\.0\.1|\[::1\]|${CLUSTER_NODE_IP//./\\.}):" || true)
[ -z "$bad" ] && ok "daemons listen only on 127.0.0.1 and $CLUSTER_NODE_IP ($(ss -Hltunp | grep -cE "pid=($(echo $pids | tr ' ' '|')),") sockets)" ||
  fail "daemons listen beyond loopback and $CLUSTER_NODE_IP: $bad"
[ "$(sysctl -n net.ipv4.ip_forward)" = "$ip_forward" ] && ok "net.ipv4.ip_forward still $ip_forward" || fail "net.ipv4.ip_forward changed"

# ---- crash: kill -9 every daemon, then up.sh again ----
kill -KILL $pids
t=$(date +%s.%N)
"$here/up.sh" >/dev/null 2>"$tmp/crash" || { cat "$tmp/crash" >&2; fail "up.sh after kill -9"; }
grep -q 'removing it with down.sh first' "$tmp/crash" || fail "up.sh after kill -9 did not clean up first: $(cat "$tmp/crash")"
kubectl get ns $ns >/dev/null 2>&1 && fail "namespace $ns survived: not a fresh cluster"
ok "after kill -9 of $(echo $pids | wc -w) daemons, up.sh cleaned up and came up again in $(secs "$t") s"

# ---- down: nothing left ----
pids=$(for f in "$CLUSTER_STATE"/pids/*; do read -r p _ <"$f"; echo "$p"; done)
t=$(date +%s.%N)
"$here/down.sh" 2>"$tmp/down" || { cat "$tmp/down" >&2; fail "down.sh"; }
ok "down.sh in $(secs "$t") s"
left=()
# (a killed daemon may stay a zombie for a moment, until this machine's init reaps it)
for p in $pids; do running "$p" && left+=("process $p"); done
pgrep -f "$CLUSTER_RUN|$CLUSTER_STATE" >/dev/null && left+=("processes: $(pgrep -af "$CLUSTER_RUN|$CLUSTER_STATE" | cut -c1-80)")
ip -o link | grep -qE " ($CLUSTER_NODE_BR|$CLUSTER_POD_BR|veth[^:]*)[:@]" && left+=("links: $(ip -o link | grep -E " ($CLUSTER_NODE_BR|$CLUSTER_POD_BR|veth[^:]*)[:@]" | awk -F': ' '{print $2}')")
findmnt -rn -o TARGET | grep -qE "^($CLUSTER_STATE|$CLUSTER_RUN|/var/lib/kubelet)" && left+=("mounts")
iptables-save | grep -qE 'KUBE-|tokenstore-cluster-guard' && left+=("iptables rules: $(iptables-save | grep -cE 'KUBE-|tokenstore-cluster-guard')")
ip6tables-save | grep -q 'KUBE-' && left+=("ip6tables KUBE-* rules")
ss -Hltunp | grep -qE "${CLUSTER_NODE_IP//./\\.}:|:($CLUSTER_APISERVER_PORT|$CLUSTER_ETCD_PORT|$CLUSTER_KUBELET_PORT|$CLUSTER_KCM_PORT|$CLUSTER_SCHED_PORT) " && left+=("listeners: $(ss -Hltunp | grep -E "${CLUSTER_NODE_IP//./\\.}:|:($CLUSTER_APISERVER_PORT|$CLUSTER_ETCD_PORT|$CLUSTER_KUBELET_PORT|$CLUSTER_KCM_PORT|$CLUSTER_SCHED_PORT) ")")
[ -e "$CLUSTER_STATE" ] || [ -e "$CLUSTER_RUN" ] && left+=("state directories")
[ ${#left[@]} -eq 0 ] || fail "after down.sh: ${left[*]}"
ok "after down.sh: no processes, links, mounts, iptables KUBE-* rules or listeners of the cluster (ss -ltnp, ip link, findmnt, iptables-save)"
