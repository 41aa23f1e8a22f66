#!/usr/bin/env bash
# Brings up a real single-node Kubernetes cluster on this machine, offline:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy (v1.35, built by hack/build-k8s.sh), containerd 1.6 + runc + the
# CNI bridge plugin from Debian, and a minimal CoreDNS. No registry: the images
# are imported into containerd with `ctr`. Only loopback, the node bridge k8s0
# (10.245.0.1) and the pod bridge cni0 carry its traffic. docs/cluster.md says
# why each setting is what it is and what this does to the host.
#
# usage: hack/cluster/up.sh      (root; progress on stderr, the admin
#                                 kubeconfig's path on the last line of stdout)
#
# If the cluster is already up and healthy it says so and exits 0. If a
# previous cluster left state behind (a crash, kill -9, a failed up.sh) it runs
# down.sh first, which removes it by the ids that run recorded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
T0=$(date +%s.%N)
log() { awk -v a="$T0" -v b="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "[up %5.1fs] %s\n", b-a, m}' >&2; }
die() { echo "up.sh: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (it creates bridges, iptables rules and mounts): sudo $0"
PIDS=$CLUSTER_STATE/pids ETC=$CLUSTER_STATE/etc PKI=$CLUSTER_STATE/pki LOGS=$CLUSTER_STATE/logs HOSTREC=$CLUSTER_STATE/host
source "$here/lib.sh"
export PATH=$PATH:/usr/local/go/bin   # hack/tools.sh and build-images.sh build with go

# One up.sh or down.sh at a time (two test runs must not interleave). The
# daemons do not inherit the lock (start() closes fd 8); down.sh run from here
# knows it is held.
mkdir -p "$TOKENSTORE_CLUSTER_HOME"
exec 8>"$TOKENSTORE_CLUSTER_HOME/lock"
flock -n 8 || { log "another up.sh or down.sh is running; waiting for it"; flock 8; }
export CLUSTER_LOCK_HELD=1
trap 'rc=$?; [ $rc = 0 ] || [ ! -d "$CLUSTER_STATE" ] || echo "up.sh: failed (exit $rc). Logs: $CLUSTER_STATE/logs. hack/cluster/down.sh removes what was started (the next up.sh does so by itself)." >&2' EXIT

# ---------- already up, or left over from a crash? ----------
if [ -d "$CLUSTER_STATE" ]; then
  dead=$(dead_daemons)
  if [ -z "$dead" ] && kubectl get --raw /readyz >/dev/null 2>&1 &&
     kubectl wait "node/$CLUSTER_NODE_NAME" --for=condition=Ready --timeout=5s >/dev/null 2>&1; then
    log "cluster already up and healthy (state in $CLUSTER_STATE); nothing to do. hack/cluster/down.sh stops it."
    trap - EXIT
    echo "$KUBECONFIG"
    exit 0
  fi
  log "state of an earlier cluster in $CLUSTER_STATE is not a healthy cluster (not running: ${dead:-none; not Ready}): removing it with down.sh first"
  "$here/down.sh" >&2 || die "down.sh could not remove the earlier cluster (see above); fix that, then run up.sh again"
fi

# ---------- what this needs on the machine ----------
# Debian packages: containerd/runc/CNI plugins are the container runtime; the
# kubelet and kube-proxy call iptables and conntrack. CI machines start without them.
declare -A pkg_of=([/usr/bin/containerd]=containerd [/usr/bin/ctr]=containerd [/usr/sbin/runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins [/usr/lib/cni/host-local]=containernetworking-plugins
  [conntrack]=conntrack [iptables]=iptables [ip6tables]=iptables [openssl]=openssl [curl]=curl
  [ip]=iproute2 [ss]=iproute2 [python3]=python3 [findmnt]=util-linux [setsid]=util-linux)
have() { if [[ "$1" == /* ]]; then [ -x "$1" ]; else command -v "$1" >/dev/null; fi; }
need_pkgs=()
for c in "${!pkg_of[@]}"; do have "$c" || need_pkgs+=("${pkg_of[$c]}"); done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
  log "installing ${need_pkgs[*]} with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"; } >&2 ||
    die "apt-get install ${need_pkgs[*]} failed: install them by hand"
  for c in "${!pkg_of[@]}"; do have "$c" || die "$c still missing after apt-get install ${pkg_of[$c]}"; done
fi

# Kubernetes binaries: cached per user; the first build takes 25-45 minutes.
if [ -z "${K8S_BIN:-}" ]; then
  log "Kubernetes binaries: hack/build-k8s.sh (cached; a first build takes 25-45 minutes)"
  K8S_BIN=$("$CLUSTER_REPO/hack/build-k8s.sh" | tail -n1) || die "hack/build-k8s.sh failed: run it by hand to see why"
fi
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl crictl; do
  [ -x "$K8S_BIN/$b" ] || die "$K8S_BIN/$b missing: run hack/build-k8s.sh (or set K8S_BIN to a directory holding all eight)"
done
images=$("$here/build-images.sh") || die "hack/cluster/build-images.sh failed (see above)"
pause_tar=$(sed -n 's/^pause=//p' <<<"$images") coredns_tar=$(sed -n 's/^coredns=//p' <<<"$images")
coredns_image=$(python3 -c 'import json,sys,tarfile; print(json.load(tarfile.open(sys.argv[1]).extractfile("index.json"))["manifests"][0]["annotations"]["io.containerd.image.name"])' "$coredns_tar")

# Fixed ports: refuse to start rather than fail later with a bind error in a log.
for p in $CLUSTER_APISERVER_PORT $CLUSTER_ETCD_PORT $CLUSTER_ETCD_PEER_PORT $CLUSTER_KUBELET_PORT $CLUSTER_KUBELET_HEALTHZ_PORT \
         $CLUSTER_KCM_PORT $CLUSTER_SCHED_PORT $CLUSTER_PROXY_METRICS_PORT $CLUSTER_PROXY_HEALTHZ_PORT; do
  holder=$(ss -Hltnp "sport = :$p")
  [ -z "$holder" ] || die "port $p is already in use, the cluster needs it: $holder"
done
[ ! -e "$CLUSTER_SOCK" ] || die "$CLUSTER_SOCK exists without cluster state: another cluster's containerd? Stop it, or remove $CLUSTER_RUN"
log "prerequisites ok (binaries in $K8S_BIN)"

# ---------- state, and what the host looked like before (for down.sh) ----------
mkdir -p "$PIDS" "$ETC" "$PKI" "$LOGS" "$HOSTREC" "$CLUSTER_STATE/bin" "$CLUSTER_STATE/cni/net.d" "$CLUSTER_STATE/cni/ipam" "$CLUSTER_RUN"
echo "$K8S_BIN" >"$CLUSTER_STATE/k8s-bin"
for b in kubectl crictl kube-proxy; do ln -sfn "$K8S_BIN/$b" "$CLUSTER_STATE/bin/$b"; done
# helm is for people and the chart tests, not for the cluster: a failure is reported, not fatal.
if helm_out=$("$CLUSTER_REPO/hack/tools.sh" helm 2>&1); then ln -sfn "$CLUSTER_REPO/bin/helm" "$CLUSTER_STATE/bin/helm"
else echo "up.sh: WARNING: hack/tools.sh helm failed, helm is not on the cluster's PATH: $helm_out" >&2; fi
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$CLUSTER_SOCK" "$CLUSTER_SOCK" >"$CRI_CONFIG_FILE"

# The kubelet sets these at start (setupKernelTunables); they are put back as
# soon as the node is Ready, and again by down.sh.
for k in kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
  v=$(sysctl -n "$k" 2>/dev/null) && echo "$k=$v"
done >"$HOSTREC/sysctl-kubelet"
# up.sh itself may have to set this one (below); down.sh puts it back.
v=$(sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null) && echo "net.bridge.bridge-nf-call-iptables=$v" >"$HOSTREC/sysctl-up" || :
# Host paths the kubelet/containerd/libcni create whatever their configuration
# says (docs/cluster.md); down.sh removes those that did not exist before.
for d in /var/lib/cni /var/run/netns /var/log/containers /var/log/pods /run/containerd /usr/libexec/kubernetes /var/lib/kubelet /run/mount; do
  [ -e "$d" ] || echo "$d"
done >"$HOSTREC/created-dirs"
# The kubelet's cgroups (cgroupfs driver): kubepods in each cgroup v1 hierarchy, or at the v2 root.
{ findmnt -rn -t cgroup -o TARGET; findmnt -rn -t cgroup2 -o TARGET; } | while read -r m; do
  [ -e "$m/kubepods" ] || echo "$m/kubepods"
done >"$HOSTREC/created-cgroups"
# down.sh sweeps the KUBE-* iptables chains only if there were none before.
iptables-save 2>/dev/null | grep -c '^:KUBE-' >"$HOSTREC/kube-chains-before" || true

# ---------- network: two local bridges, pods without a default route, no global ip_forward ----------
ip link show "$CLUSTER_NODE_BR" >/dev/null 2>&1 || ip link add "$CLUSTER_NODE_BR" type bridge
echo "$CLUSTER_NODE_BR" >>"$HOSTREC/links"
ip addr replace "$CLUSTER_NODE_IP/32" dev "$CLUSTER_NODE_BR"
ip link set "$CLUSTER_NODE_BR" up
# The Service range is routed into the port-less k8s0: a ClusterIP that
# kube-proxy has no rule for dies here instead of following the default route.
ip route replace "$CLUSTER_SVC_CIDR" dev "$CLUSTER_NODE_BR" src "$CLUSTER_NODE_IP"
ip link show "$CLUSTER_POD_BR" >/dev/null 2>&1 || ip link add "$CLUSTER_POD_BR" type bridge
echo "$CLUSTER_POD_BR" >>"$HOSTREC/links"
ip addr replace "$CLUSTER_POD_GW/24" dev "$CLUSTER_POD_BR"
ip link set "$CLUSTER_POD_BR" up
# Forwarding only for packets entering from the pod bridge (pod -> ClusterIP -> pod); it goes with cni0.
sysctl -qw "net.ipv4.conf.$CLUSTER_POD_BR.forwarding=1"
# Replies between two pods on the bridge must pass iptables to undo kube-proxy's DNAT.
[ "$(sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null)" = 1 ] || { modprobe br_netfilter 2>/dev/null || true; sysctl -qw net.bridge.bridge-nf-call-iptables=1; }
# Nothing from a pod may be routed anywhere but back into the pod bridge.
guard=(FORWARD -i "$CLUSTER_POD_BR" ! -o "$CLUSTER_POD_BR" -m comment --comment tokenstore-cluster-guard -j DROP)
iptables -t mangle -C "${guard[@]}" 2>/dev/null || iptables -t mangle -I "${guard[@]}"
log "network: $CLUSTER_NODE_BR=$CLUSTER_NODE_IP, $CLUSTER_POD_BR=$CLUSTER_POD_GW/24, guard rule in mangle FORWARD"

# ---------- PKI: one CA, EC P-256 certificates, an RSA service-account key ----------
(
cd "$PKI"
cat >openssl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
EOF
ca() { openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$1.key" -out "$1.crt" \
         -days 3650 -subj "/CN=$2" -config openssl.cnf -extensions ca 2>/dev/null; }
cert() { # [CA=basename] cert NAME SUBJECT EKU [SANS]
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$1.key" -out "$1.csr" -subj "$2" -config openssl.cnf 2>/dev/null
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"; echo "extendedKeyUsage=$3"
    [ -z "${4:-}" ] || echo "subjectAltName=$4"; } >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "${CA:-ca}.crt" -CAkey "${CA:-ca}.key" -set_serial "0x$(openssl rand -hex 8)" -days 3650 \
    -out "$1.crt" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"; }
ca ca tokenstore-cluster-ca
cert apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$CLUSTER_KUBE_SVC_IP,IP:$CLUSTER_NODE_IP,IP:127.0.0.1"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
# controller-manager in system:masters: its controllers run with its own
# credentials (--use-service-account-credentials=false), see below.
cert controller-manager "/O=system:masters/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kubelet "/O=system:nodes/CN=system:node:$CLUSTER_NODE_NAME" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
# The aggregation layer's CA and client: without them controller-manager and
# scheduler log "missing content for CA bundle requestheader-client-ca-file" forever.
ca front-proxy-ca tokenstore-cluster-front-proxy-ca
CA=front-proxy-ca cert front-proxy-client "/CN=front-proxy-client" clientAuth
openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
chmod 600 ./*.key
) || die "creating the certificates with openssl failed"
kubeconfig() { # kubeconfig NAME (certificate basename)
  cat >"$ETC/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tokenstore-cluster
  cluster:
    server: https://$CLUSTER_NODE_IP:$CLUSTER_APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$1.crt")
    client-key-data: $(base64 -w0 "$PKI/$1.key")
contexts:
- name: tokenstore-cluster
  context: {cluster: tokenstore-cluster, user: $1}
current-context: tokenstore-cluster
EOF
}
for k in admin controller-manager scheduler kubelet kube-proxy; do kubeconfig $k; done
log "certificates and kubeconfigs written"

# ---------- etcd ----------
start etcd "$K8S_BIN/etcd" --name "$CLUSTER_NODE_NAME" --data-dir "$CLUSTER_STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$CLUSTER_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$CLUSTER_ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$CLUSTER_ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$CLUSTER_ETCD_PEER_PORT" \
  --initial-cluster "$CLUSTER_NODE_NAME=http://127.0.0.1:$CLUSTER_ETCD_PEER_PORT" --initial-cluster-state new \
  --unsafe-no-fsync --log-level warn

# ---------- containerd (its own socket, root and state; does not need the control plane) ----------
cat >"$ETC/containerd.toml" <<EOF
version = 2
root = "$CLUSTER_STATE/containerd"
state = "$CLUSTER_RUN"
[grpc]
  address = "$CLUSTER_SOCK"
[ttrpc]
  address = "$CLUSTER_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CLUSTER_STATE/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$CLUSTER_PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  # Root here lacks CAP_SYS_RESOURCE, so nothing may lower oom_score_adj below
  # 0; without this every sandbox fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "$CLUSTER_RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_STATE/cni/net.d"
    max_conf_num = 1
EOF
cat >"$CLUSTER_STATE/cni/net.d/10-tokenstore-cluster.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "tokenstore-cluster",
  "plugins": [{
    "type": "bridge",
    "bridge": "$CLUSTER_POD_BR",
    "isGateway": false,
    "isDefaultGateway": false,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": "$CLUSTER_STATE/cni/ipam",
      "ranges": [[{"subnet": "$CLUSTER_POD_SUBNET", "rangeStart": "10.244.0.10", "rangeEnd": "10.244.0.250", "gateway": "$CLUSTER_POD_GW"}]],
      "routes": [{"dst": "$CLUSTER_SVC_CIDR", "gw": "$CLUSTER_POD_GW"}, {"dst": "$CLUSTER_NODE_IP/32", "gw": "$CLUSTER_POD_GW"}]
    }
  }]
}
EOF
start containerd /usr/bin/containerd --config "$ETC/containerd.toml"

wait_for 30 "etcd healthy" curl -fsS "http://127.0.0.1:$CLUSTER_ETCD_PORT/health"

# ---------- kube-apiserver ----------
sa_issuer=https://kubernetes.default.svc.cluster.local
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$CLUSTER_ETCD_PORT" \
  --bind-address="$CLUSTER_NODE_IP" --advertise-address="$CLUSTER_NODE_IP" --secure-port="$CLUSTER_APISERVER_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
  --service-cluster-ip-range="$CLUSTER_SVC_CIDR" \
  --service-account-issuer="$sa_issuer" --api-audiences="$sa_issuer" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --profiling=false --v=1

wait_for 30 "containerd up" ctr -a "$CLUSTER_SOCK" version
for t in "$pause_tar" "$coredns_tar"; do
  ctr -a "$CLUSTER_SOCK" -n k8s.io images import --platform "linux/$(dpkg --print-architecture)" "$t" >/dev/null ||
    die "ctr images import $t failed"
done
log "images imported: $CLUSTER_PAUSE_IMAGE $coredns_image"

wait_for 60 "kube-apiserver ready" kubectl get --raw /readyz

# ---------- controller-manager and scheduler (single instances: no leader election) ----------
# --use-service-account-credentials=false: with it, the controller-manager
# makes a ServiceAccount and token for each of its ~40 controllers one after
# the other before starting them, which put the default ServiceAccount and
# kube-root-ca.crt (so every pod) 4-5 s behind; a throwaway cluster does not
# need the controllers' separate identities.
kcm=$ETC/controller-manager.kubeconfig
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$kcm" --authentication-kubeconfig="$kcm" --authorization-kubeconfig="$kcm" \
  --bind-address=127.0.0.1 --secure-port="$CLUSTER_KCM_PORT" \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --use-service-account-credentials=false \
  --service-cluster-ip-range="$CLUSTER_SVC_CIDR" --cluster-cidr="$CLUSTER_CIDR" --allocate-node-cidrs=false \
  --flex-volume-plugin-dir="$CLUSTER_STATE/flexvolume" --leader-elect=false --profiling=false --v=1
sch=$ETC/scheduler.kubeconfig
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$sch" --authentication-kubeconfig="$sch" --authorization-kubeconfig="$sch" \
  --bind-address=127.0.0.1 --secure-port="$CLUSTER_SCHED_PORT" --leader-elect=false --profiling=false --v=1

# ---------- kubelet ----------
cat >"$ETC/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false              # 1.35 refuses cgroup v1 without it
cgroupDriver: cgroupfs           # must match containerd's SystemdCgroup=false (1.6 cannot report it over CRI)
containerRuntimeEndpoint: unix://$CLUSTER_SOCK
address: $CLUSTER_NODE_IP
port: $CLUSTER_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $CLUSTER_KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS_IP]
resolvConf: ""                   # never hand the host's nameservers to pods
failSwapOn: false
podLogsDir: $CLUSTER_STATE/pod-logs
volumePluginDir: $CLUSTER_STATE/flexvolume
imageGCHighThresholdPercent: 100 # imported images cannot be pulled again: never collect them
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
serializeImagePulls: false
EOF
start kubelet "$K8S_BIN/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$ETC/kubelet.kubeconfig" \
  --hostname-override="$CLUSTER_NODE_NAME" --node-ip="$CLUSTER_NODE_IP" \
  --root-dir="$CLUSTER_STATE/kubelet" --cert-dir="$CLUSTER_STATE/kubelet-pki" --v=1

# ---------- kube-proxy (iptables mode) ----------
cat >"$ETC/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $ETC/kube-proxy.kubeconfig}
hostnameOverride: $CLUSTER_NODE_NAME
clusterCIDR: $CLUSTER_CIDR
healthzBindAddress: 127.0.0.1:$CLUSTER_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$CLUSTER_PROXY_METRICS_PORT
nodePortAddresses: ["$CLUSTER_NODE_IP/32"]
iptables: {localhostNodePorts: false, minSyncPeriod: 1s, syncPeriod: 30s}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
start kube-proxy "$K8S_BIN/kube-proxy" --config="$ETC/kube-proxy.yaml" --v=1

# ---------- cluster DNS: CoreDNS without a forward plugin (answers cluster.local only) ----------
# Applied now, so its pod is created and scheduled while the node and the
# controllers finish starting (waited for at the end).
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:coredns}
rules:
- {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: system:coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:coredns}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:1053 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      priorityClassName: system-cluster-critical
      securityContext: {runAsNonRoot: true, runAsUser: 65532}
      containers:
      - name: coredns
        image: $coredns_image
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports: [{containerPort: 1053, protocol: UDP, name: dns}, {containerPort: 1053, protocol: TCP, name: dns-tcp}]
        livenessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 10}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 1}
        resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {memory: 128Mi}}
        volumeMounts: [{name: cfg, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: cfg, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $CLUSTER_DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
EOF
wait_for 120 "node $CLUSTER_NODE_NAME Ready" kubectl wait "node/$CLUSTER_NODE_NAME" --for=condition=Ready --timeout=2s
# The kubelet has set its kernel tunables by now (once, at start): put the host's values back.
restore_sysctls "$HOSTREC/sysctl-kubelet"
wait_for 60 "default ServiceAccount and kube-root-ca.crt exist" kubectl -n default get sa/default cm/kube-root-ca.crt
wait_for 60 "kube-proxy synced" curl -fsS "http://127.0.0.1:$CLUSTER_PROXY_HEALTHZ_PORT/healthz"

wait_for 90 "CoreDNS ready at $CLUSTER_DNS_IP" kubectl -n kube-system wait deploy/coredns --for=condition=Available --timeout=2s

trap - EXIT
log "cluster up: source hack/cluster/env.sh; kubectl get nodes"
echo "$KUBECONFIG"
