package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/krill-xmpp/krill/cluster"
)

// clusterCmd runs krill cluster SUBCOMMAND.
func clusterCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "drain" {
		return clusterDrain(args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "status" {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	return clusterStatus(args[1:], stdout, stderr)
}

// clusterStatus lists the nodes heard on NATS during two heartbeats, each
// with its session count, and the size of the session directory. It joins
// nothing: it listens to the heartbeats as any NATS client may.
func clusterStatus(args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("cluster status", args, stderr)
	if err != nil {
		return err
	}
	if !cfg.Cluster.Enabled() {
		return errors.New("cluster status: cluster.nats_url is not set: this is a standalone server")
	}
	listen := 2*cfg.Cluster.Heartbeat + cfg.Cluster.Heartbeat/2
	ctx, cancel := context.WithTimeout(context.Background(), listen+10*time.Second)
	defer cancel()
	nodes, entries, err := cluster.Watch(ctx, cfg.Cluster, cfg.Domain, listen)
	if err != nil {
		return fmt.Errorf("cluster status: %w", err)
	}
	fmt.Fprintf(stdout, "domain %s: %d node(s) alive, %d session(s) in the directory\n", cfg.Domain, len(nodes), entries)
	for _, n := range nodes {
		fmt.Fprintf(stdout, "  %-20s sessions %-8d up %s\n", n.Name, n.Sessions, time.Since(n.Started).Round(time.Second))
	}
	if len(nodes) == 0 {
		return errors.New("cluster status: no node heard")
	}
	return nil
}
