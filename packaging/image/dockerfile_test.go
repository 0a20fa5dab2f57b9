package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// instruction is one Dockerfile instruction: its upper-case keyword and
// the rest of its (continued) line.
type instruction struct {
	keyword, args string
}

// finalStage returns the instructions after the last FROM of the
// Dockerfile at path, with continuation lines joined and comments dropped.
func finalStage(t *testing.T, path string) []instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if more, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(more + " ")
			continue
		}
		cur.WriteString(trimmed)
		kw, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		kw = strings.ToUpper(kw)
		if kw == "FROM" {
			out = out[:0]
			continue
		}
		out = append(out, instruction{kw, strings.Join(strings.Fields(args), " ")})
	}
	return out
}

// TestDockerfile checks that the Dockerfile's runtime stage states what
// the engine-free builder puts in the image.
func TestDockerfile(t *testing.T) {
	stage := finalStage(t, filepath.Join("..", "..", "Dockerfile"))
	all := func(kw string) []string {
		var xs []string
		for _, in := range stage {
			if in.keyword == kw {
				xs = append(xs, in.args)
			}
		}
		return xs
	}
	one := func(t *testing.T, kw string) string {
		t.Helper()
		xs := all(kw)
		if len(xs) != 1 {
			t.Fatalf("%d %s instructions in the final stage, want 1", len(xs), kw)
		}
		return xs[0]
	}
	jsonArray := func(t *testing.T, kw string) []string {
		t.Helper()
		var xs []string
		if err := json.Unmarshal([]byte(one(t, kw)), &xs); err != nil {
			t.Fatalf("%s is not in JSON (exec) form: %v", kw, err)
		}
		return xs
	}

	tests := []struct {
		name string
		got  func(t *testing.T) any
		want any
	}{
		{"USER", func(t *testing.T) any { return one(t, "USER") }, "65532:65532"},
		{"WORKDIR", func(t *testing.T) any { return one(t, "WORKDIR") }, dataDir},
		{"STOPSIGNAL", func(t *testing.T) any { return one(t, "STOPSIGNAL") }, "SIGTERM"},
		{"ENTRYPOINT", func(t *testing.T) any { return jsonArray(t, "ENTRYPOINT") }, []string{binPath}},
		{"CMD", func(t *testing.T) any { return jsonArray(t, "CMD") }, []string{"serve"}},
		{"VOLUME", func(t *testing.T) any { return jsonArray(t, "VOLUME") }, volumes},
		{"EXPOSE", func(t *testing.T) any {
			var ports []string
			for _, args := range all("EXPOSE") {
				for _, p := range strings.Fields(args) {
					if !strings.Contains(p, "/") {
						p += "/tcp"
					}
					ports = append(ports, p)
				}
			}
			slices.Sort(ports)
			return ports
		}, exposedPorts},
		{"ENV", func(t *testing.T) any {
			var env [][2]string
			for _, args := range all("ENV") {
				for _, kv := range strings.Fields(args) {
					k, v, ok := strings.Cut(kv, "=")
					if !ok {
						t.Fatalf("ENV %q: use the NAME=value form", args)
					}
					env = append(env, [2]string{k, v})
				}
			}
			return env
		}, containerEnv},
		{"HEALTHCHECK", func(t *testing.T) any {
			opts, cmd, ok := strings.Cut(one(t, "HEALTHCHECK"), "CMD ")
			if !ok {
				t.Fatal("HEALTHCHECK has no CMD")
			}
			var hc struct {
				Test                           []string
				Interval, Timeout, StartPeriod time.Duration
				Retries                        string
			}
			if err := json.Unmarshal([]byte(cmd), &hc.Test); err != nil {
				t.Fatalf("HEALTHCHECK CMD is not in JSON (exec) form: %v", err)
			}
			hc.Test = append([]string{"CMD"}, hc.Test...)
			for _, o := range strings.Fields(opts) {
				k, v, _ := strings.Cut(strings.TrimPrefix(o, "--"), "=")
				var err error
				switch k {
				case "interval":
					hc.Interval, err = time.ParseDuration(v)
				case "timeout":
					hc.Timeout, err = time.ParseDuration(v)
				case "start-period":
					hc.StartPeriod, err = time.ParseDuration(v)
				case "retries":
					hc.Retries = v
				default:
					t.Errorf("HEALTHCHECK option %s is not in the built image", o)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			return []any{hc.Test, hc.Interval, hc.Timeout, hc.StartPeriod, hc.Retries}
		}, []any{healthcheck.Test, healthcheck.Interval, healthcheck.Timeout, healthcheck.StartPeriod, strconv.Itoa(healthcheck.Retries)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.got(t); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Dockerfile %s = %v, the built image has %v", tt.name, got, tt.want)
			}
		})
	}

	t.Run("LABEL", func(t *testing.T) {
		got := make(map[string]string)
		for _, args := range all("LABEL") {
			// key="value with spaces" pairs.
			for rest := args; rest != ""; {
				k, v, ok := strings.Cut(rest, `="`)
				if !ok {
					t.Fatalf("LABEL %q: use key=\"value\" pairs", args)
				}
				v, rest, ok = strings.Cut(v, `"`)
				if !ok {
					t.Fatalf("LABEL %q: unterminated value", args)
				}
				got[strings.TrimSpace(k)] = v
				rest = strings.TrimSpace(rest)
			}
		}
		if !reflect.DeepEqual(got, staticLabels) {
			t.Errorf("Dockerfile LABEL = %v, the built image has %v", got, staticLabels)
		}
	})

	t.Run("COPY", func(t *testing.T) {
		want := map[string]bool{binPath: false, dataDir + "/": false, certsDir + "/": false}
		for _, args := range all("COPY") {
			f := strings.Fields(args)
			dst := f[len(f)-1]
			if _, ok := want[dst]; ok {
				want[dst] = true
				if dst != binPath && !strings.Contains(args, "--chown=65532:65532") {
					t.Errorf("COPY to %s must be owned by 65532 (a fresh volume copies its owner): %s", dst, args)
				}
			}
		}
		for dst, seen := range want {
			if !seen {
				t.Errorf("no COPY to %s in the final stage", dst)
			}
		}
	})
}
