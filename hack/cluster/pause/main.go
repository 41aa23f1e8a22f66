// Command pause is the sandbox ("infra") process of every pod on the local
// cluster (hack/cluster/up.sh). containerd's CRI starts it first in each pod to
// hold the pod's namespaces; no registry can be reached here, so the upstream
// registry.k8s.io/pause image is replaced by this binary under the same name.
//
// It sleeps until SIGINT/SIGTERM and reaps zombies, because it is PID 1 of
// the pod when the pod shares its PID namespace.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGINT, syscall.SIGTERM)
	chld := make(chan os.Signal, 16)
	signal.Notify(chld, syscall.SIGCHLD)
	for {
		select {
		case <-term:
			os.Exit(0)
		case <-chld:
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
