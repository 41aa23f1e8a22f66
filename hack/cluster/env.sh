# Settings of the local single-node cluster (hack/cluster/*.sh). Source it:
#
#   source hack/cluster/env.sh && kubectl get nodes
#
# For your shell it sets KUBECONFIG, KUBECACHEDIR, PATH (kubectl, crictl and
# helm, as linked by up.sh into the state directory), CRI_CONFIG_FILE (crictl)
# and CONTAINERD_ADDRESS/CONTAINERD_NAMESPACE (ctr), all pointing at the
# cluster that up.sh started. Sourcing changes nothing on the machine, and it
# is safe to source more than once. (No `set -e` here: it is sourced by
# interactive shells too.)

CLUSTER_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CLUSTER_REPO

# Everything lives outside the work tree, so a second clone (CI) reuses the
# cached binaries and images and cannot leave a cluster inside a checkout.
CLUSTER_TOOLS_CACHE=${TOKENSTORE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenstore-tools}
export TOKENSTORE_CLUSTER_HOME=${TOKENSTORE_CLUSTER_HOME:-$CLUSTER_TOOLS_CACHE/cluster}
export CLUSTER_STATE=$TOKENSTORE_CLUSTER_HOME/state      # all a running cluster writes; down.sh deletes it
export CLUSTER_IMAGES=$CLUSTER_TOOLS_CACHE/cluster-images  # pause and CoreDNS archives (build-images.sh), kept
# containerd's state (sockets, shim bundles, runc state) is runtime state: on
# tmpfs, and short enough for unix socket paths (108 bytes at most).
export CLUSTER_RUN=/run/tokenstore-cluster
export CLUSTER_SOCK=$CLUSTER_RUN/containerd.sock

# One node, addresses that only exist on this machine (see docs/cluster.md).
export CLUSTER_NODE_NAME=tokenstore-node
export CLUSTER_NODE_IP=10.245.0.1     # on bridge k8s0 (no ports): API server, kubelet, and where pods reach the host
export CLUSTER_NODE_BR=k8s0
export CLUSTER_POD_BR=cni0
export CLUSTER_POD_SUBNET=10.244.0.0/24 CLUSTER_POD_GW=10.244.0.1 CLUSTER_CIDR=10.244.0.0/16
export CLUSTER_SVC_CIDR=10.96.0.0/16 CLUSTER_KUBE_SVC_IP=10.96.0.1 CLUSTER_DNS_IP=10.96.0.10
export CLUSTER_APISERVER_PORT=16443 CLUSTER_ETCD_PORT=12379 CLUSTER_ETCD_PEER_PORT=12380
export CLUSTER_KUBELET_PORT=10250 CLUSTER_KUBELET_HEALTHZ_PORT=10248
export CLUSTER_KCM_PORT=10257 CLUSTER_SCHED_PORT=10259 CLUSTER_PROXY_METRICS_PORT=10249 CLUSTER_PROXY_HEALTHZ_PORT=10256

# Images the cluster itself runs, built locally by build-images.sh (no
# registry is reachable): "localhost/" says so, and nothing tries to pull them.
export CLUSTER_PAUSE_IMAGE=localhost/tokenstore-cluster/pause:3.10.1
export CLUSTER_COREDNS_IMAGE_REPO=localhost/tokenstore-cluster/coredns

export KUBECONFIG=$CLUSTER_STATE/etc/admin.kubeconfig
export KUBECACHEDIR=$CLUSTER_STATE/kube-cache   # kubectl/helm discovery cache, not ~/.kube/cache
export CRI_CONFIG_FILE=$CLUSTER_STATE/etc/crictl.yaml
export CONTAINERD_ADDRESS=$CLUSTER_SOCK CONTAINERD_NAMESPACE=k8s.io
# up.sh links kubectl, crictl, kube-proxy (for down.sh) and helm here.
case ":$PATH:" in
  *":$CLUSTER_STATE/bin:"*) ;;
  *) export PATH=$CLUSTER_STATE/bin:$PATH ;;
esac
