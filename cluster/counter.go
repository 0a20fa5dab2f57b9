package cluster

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Cluster-wide counters: a key per name and fixed window in a JetStream
// key-value bucket, incremented by compare-and-swap. They are for rare
// events worth a round trip (an in-band registration, already on a
// worker and about to hash a password), never for a connection's accept.

// counterBucketPrefix names the counters' bucket.
const counterBucketPrefix = "krill_counters_"

// counterMaxAge is how long a counter's key lives: windows longer than
// this are counted cluster-wide for this long only (register.window is an
// hour by default).
const counterMaxAge = 7 * 24 * time.Hour

// errCounterBusy means a counter was contended past the retries.
var errCounterBusy = errors.New("cluster: counter contended")

// openCounters opens (or creates) the counters' bucket.
func openCounters(ctx context.Context, n *Node, js jetstream.JetStream) (jetstream.KeyValue, error) {
	token := sanitize(strings.ReplaceAll(n.domain, ".", "_"))
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      counterBucketPrefix + token,
		Description: "Krill cluster-wide rate counters for " + n.domain,
		History:     1,
		TTL:         counterMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    n.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: counter bucket: %w", err)
	}
	return kv, nil
}

// Count counts one event of name in the current window (fixed windows
// from the Unix epoch) across the cluster and reports whether it is within
// max; an event over max is not counted. It blocks for key-value round
// trips.
func (l *Leases) Count(ctx context.Context, name string, window time.Duration, max int) (bool, error) {
	if window <= 0 || max <= 0 {
		return true, nil
	}
	k := "c." + base64.RawURLEncoding.EncodeToString([]byte(name)) + "." + strconv.FormatInt(time.Now().UnixNano()/int64(window), 36)
	for range 16 {
		e, err := l.counters.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err = l.counters.Create(ctx, k, []byte("1")); err == nil {
				return true, nil
			}
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
		}
		if err != nil {
			return false, fmt.Errorf("cluster: counter %s: %w", k, err)
		}
		v, _ := strconv.Atoi(string(e.Value()))
		if v >= max {
			return false, nil
		}
		if _, err = l.counters.Update(ctx, k, []byte(strconv.Itoa(v+1)), e.Revision()); err == nil {
			return true, nil
		}
		if ctx.Err() != nil {
			return false, fmt.Errorf("cluster: counter %s: %w", k, err)
		}
	}
	return false, errCounterBusy
}
