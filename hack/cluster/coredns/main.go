// Command coredns is a minimal CoreDNS for the local cluster's service
// discovery (hack/cluster/up.sh deploys it as kube-dns at 10.96.0.10), built
// from the Go module proxy because no image registry is reachable here.
//
// Only the plugins the Corefile in up.sh uses are linked in. There is
// deliberately no "forward" plugin: names outside cluster.local never leave
// the node, so a pod cannot use DNS to reach (or leak to) anything outside.
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
