// Command smoke is the workload of hack/cluster/smoke.sh: a static,
// standard-library-only binary that smoke.sh wraps into a multi-arch image,
// imports with load-image.sh and runs as pods, so the cluster is proven with
// nothing pulled from anywhere.
//
//	smoke serve ADDR         HTTP: / (hello + hostname), /healthz, /token (the file in TOKEN_FILE)
//	smoke get URL [TRIES]    GET URL, print "HTTP <code>: <body>"; exit 0 on 200 (retries 1 s apart)
//	smoke resolve NAME [TRIES]  resolve NAME with the pod's resolver, print the addresses; exit 0 if any
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: smoke serve ADDR | get URL [TRIES] | resolve NAME [TRIES]")
		os.Exit(2)
	}
	tries := 1
	if len(os.Args) > 3 {
		n, err := strconv.Atoi(os.Args[3])
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "TRIES must be a positive number")
			os.Exit(2)
		}
		tries = n
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "get":
		os.Exit(retry(tries, func() error { return get(os.Args[2]) }))
	case "resolve":
		os.Exit(retry(tries, func() error { return resolve(os.Args[2]) }))
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func serve(addr string) {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from %s\n", host) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(os.Getenv("TOKEN_FILE"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(b)
	})
	fmt.Println("serving on", addr)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// retry runs f up to n times, 1 s apart: a pod may start before the Service's
// endpoints or DNS record exist.
func retry(n int, f func() error) int {
	var err error
	for i := 0; i < n; i++ {
		if i > 0 {
			time.Sleep(time.Second)
		}
		if err = f(); err == nil {
			return 0
		}
	}
	fmt.Println("error:", err)
	return 1
}

func get(url string) error {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("HTTP %d: %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func resolve(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil {
		return err
	}
	fmt.Printf("%s -> %s\n", name, strings.Join(addrs, " "))
	return nil
}
