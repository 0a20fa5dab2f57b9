package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// clusterDrain asks the running node of this configuration (its admin
// listener, admin.listen) to drain: it lets its clients resume on the
// other nodes and exits. It waits until the node has gone, at most
// cluster.drain_timeout plus server.shutdown_timeout plus a margin.
func clusterDrain(args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("cluster drain", args, stderr)
	if err != nil {
		return err
	}
	if !cfg.Cluster.Enabled() {
		return errors.New("cluster drain: cluster.nats_url is not set: this is a standalone server (use SIGTERM)")
	}
	if cfg.Admin.Listen == "" {
		return errors.New("cluster drain: admin.listen is not set: the node has no admin listener to ask")
	}
	base := "http://" + cfg.Admin.Listen
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post(base+"/cluster/drain", "text/plain", nil)
	if err != nil {
		return fmt.Errorf("cluster drain: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("cluster drain: %s answered %s: %s", cfg.Admin.Listen, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "node %s draining (at most %s)\n", cfg.Cluster.NodeName, cfg.Cluster.DrainTimeout)
	deadline := time.Now().Add(cfg.Cluster.DrainTimeout + cfg.Server.ShutdownTimeout + 10*time.Second)
	for time.Now().Before(deadline) {
		r, err := client.Get(base + "/healthz")
		if err != nil {
			fmt.Fprintln(stdout, "drained: the node has stopped")
			return nil
		}
		r.Body.Close()
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("cluster drain: the node still answers on %s after %s", cfg.Admin.Listen, cfg.Cluster.DrainTimeout+cfg.Server.ShutdownTimeout)
}
