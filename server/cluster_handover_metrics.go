package server

import "github.com/prometheus/client_golang/prometheus"

// handoverCollector exposes on /metrics what this node's part of issue
// 17's migration work counts: hand-overs, drain, resends and revivals
// (cluster_resume.go, cluster_drain.go, cluster/resend.go,
// cluster/revive.go).
type handoverCollector Server

var (
	descClusterHandovers = prometheus.NewDesc("krill_cluster_handovers_total",
		"Stream management sessions handed over between nodes: to another node (out), from another node (in), and hand-overs this node began that were never claimed (failed: the session ended as if expired).",
		[]string{"result"}, nil)
	descClusterDraining = prometheus.NewDesc("krill_cluster_draining",
		"1 while this node drains (krill cluster drain), else 0.", nil, nil)
	descClusterResent = prometheus.NewDesc("krill_cluster_resent_total",
		"Kept messages published again for want of an acknowledgement (a NATS restart window), and copies this node received and dropped as already delivered (duplicate).",
		[]string{"kind"}, nil)
	descClusterRevived = prometheus.NewDesc("krill_cluster_revived_sessions_total",
		"Sessions whose presence this node announced again after the others had taken it as dead.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *handoverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClusterHandovers, descClusterDraining, descClusterResent, descClusterRevived} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *handoverCollector) Collect(ch chan<- prometheus.Metric) {
	s := (*Server)(c)
	ch <- prometheus.MustNewConstMetric(descClusterHandovers, prometheus.CounterValue, float64(s.moves.handedOut.Load()), "out")
	ch <- prometheus.MustNewConstMetric(descClusterHandovers, prometheus.CounterValue, float64(s.moves.handedIn.Load()), "in")
	ch <- prometheus.MustNewConstMetric(descClusterHandovers, prometheus.CounterValue, float64(s.moves.handoverFailed.Load()), "failed")
	draining := 0.0
	if s.drain.on.Load() {
		draining = 1
	}
	ch <- prometheus.MustNewConstMetric(descClusterDraining, prometheus.GaugeValue, draining)
	resent, dups := s.cluster.Resent()
	ch <- prometheus.MustNewConstMetric(descClusterResent, prometheus.CounterValue, float64(resent), "resent")
	ch <- prometheus.MustNewConstMetric(descClusterResent, prometheus.CounterValue, float64(dups), "duplicate")
	ch <- prometheus.MustNewConstMetric(descClusterRevived, prometheus.CounterValue, float64(s.cluster.Revived()))
}
