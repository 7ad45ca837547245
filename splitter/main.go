// gpuserve-splitter: the data plane in front of Ray Serve. It splits each service's
// traffic between its versions by weight, passes every request and response through
// unchanged (streams included), and answers its own errors as short JSON.
//
// Several instances listen on the same address (SO_REUSEPORT): the kernel spreads
// connections over them, and when one dies the others keep serving. Each instance has
// its own admin socket, so the controller can tell every instance to reload and check
// that each applied a weight change before it counts it done.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8000", "public address (shared by every instance)")
	admin := flag.String("admin", "", "admin unix socket of this instance")
	upstream := flag.String("upstream", "http://127.0.0.1:8001", "the Serve HTTP proxy")
	serveAPI := flag.String("serve-api", "http://127.0.0.1:8265", "the Ray dashboard (Serve REST API)")
	tokenFile := flag.String("token-file", "", "file holding the dashboard's bearer token")
	poll := flag.Duration("poll", time.Second, "how often to re-read the routing table")
	maxBody := flag.Int64("max-body-bytes", 10<<20, "default request body limit")
	maxHeader := flag.Int("max-header-bytes", 64<<10, "request header limit")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	up, err := url.Parse(*upstream)
	if err != nil || up.Host == "" {
		log.Fatalf("-upstream %q is not a URL like http://127.0.0.1:8001", *upstream)
	}
	metrics := NewMetrics()
	splitter := NewSplitter(up, *maxHeader, metrics)
	source := &Source{URL: *serveAPI, TokenFile: *tokenFile, Client: &http.Client{Timeout: 10 * time.Second}}
	reload := func() (*Table, error) {
		body, err := source.Fetch()
		if err != nil {
			return nil, err
		}
		table, err := BuildTable(body, *maxBody)
		if err != nil {
			return nil, err
		}
		splitter.table.Store(table)
		return table, nil
	}
	if _, err := reload(); err != nil {
		log.Printf("routing table not loaded yet: %v", err)
	}
	go func() {
		for range time.Tick(*poll) {
			if _, err := reload(); err != nil {
				log.Printf("routing table reload failed (keeping the last one): %v", err)
			}
		}
	}()

	lc := net.ListenConfig{Control: reusePort}
	ln, err := lc.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		log.Fatalf("listen %s: %v", *listen, err)
	}
	public := &http.Server{
		Handler:           splitter,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		// Above our own limit, so that the splitter answers 431 itself, as JSON.
		MaxHeaderBytes: *maxHeader + 64<<10,
		ErrorLog:       log.New(os.Stderr, "http: ", log.LstdFlags),
	}
	servers := []*http.Server{public}
	go serve(public, ln)

	if *admin != "" {
		_ = os.Remove(*admin)
		aln, err := net.Listen("unix", *admin)
		if err != nil {
			log.Fatalf("admin socket %s: %v", *admin, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/reload", func(w http.ResponseWriter, r *http.Request) {
			table, err := reload()
			if err != nil {
				writeError(w, http.StatusBadGateway, "reload_failed", err.Error(), "", "")
				return
			}
			writeJSON(w, table)
		})
		mux.HandleFunc("/routes", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, splitter.table.Load()) })
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) { metrics.Write(w) })
		// Every answer since ?since_ms= (unix ms): the gates' real-traffic figures.
		mux.HandleFunc("/samples", func(w http.ResponseWriter, r *http.Request) {
			since, _ := strconv.ParseInt(r.URL.Query().Get("since_ms"), 10, 64)
			writeJSON(w, map[string]any{"pid": os.Getpid(), "samples": metrics.Since(since)})
		})
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, map[string]any{"pid": os.Getpid(), "listen": *listen})
		})
		adminServer := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, adminServer)
		go serve(adminServer, aln)
	}
	log.Printf("gpuserve-splitter pid %d listening on %s, upstream %s", os.Getpid(), *listen, *upstream)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	// Drain: stop accepting, let requests in flight finish (streams get 10 s).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(ctx)
	}
	if *admin != "" {
		_ = os.Remove(*admin)
	}
}

func serve(s *http.Server, ln net.Listener) {
	if err := s.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatalf("serve: %v", err)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func reusePort(network, address string, c syscall.RawConn) error {
	var sockErr error
	err := c.Control(func(fd uintptr) {
		sockErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
	})
	if err != nil {
		return err
	}
	if sockErr != nil {
		return fmt.Errorf("SO_REUSEPORT: %w", sockErr)
	}
	return nil
}
