#!/usr/bin/env bash
# compare.sh: Krill, Prosody and ejabberd side by side on this machine.
#
# As root: installs prosody and ejabberd from Debian if missing, writes
# their configurations for loopback (Krill 5222, Prosody 5322, ejabberd
# 5422; one server runs at a time), provisions the bench accounts, and for
# each server, stage and repeat starts a fresh server with an open-files
# limit of 20000, measures the idle stage with krill-bench, and stops it.
# Then the workloads (login rate, throughput, pre-auth attack), each on a
# fresh server, and the report (Markdown table, SVG charts).
#
# Knobs (environment): N (5000), R (2), NBIG (15000, Krill only; 0 skips),
# RBIG (2), SERVERS ("krill prosody ejabberd"), STAGES ("tcp stream tls
# auth"; the WebSocket stages ws, wss and wss-auth are measured on each
# server's WebSocket endpoint: Krill 5443 /xmpp-websocket, Prosody 5380 and
# 5381 /xmpp-websocket, ejabberd 5482 and 5443 /ws), CLIENTS (2 client processes), CURVES (the client's key exchange
# groups, empty: Go's default), WORKLOADS (1; 0 skips), QUICK (0; 1 = the Krill-only quick suite
# of `make bench`), OUT (bench/results/DATE-MACHINE), WORK (/tmp/krill-compare).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
N=${N:-5000}
R=${R:-2}
NBIG=${NBIG:-15000}
RBIG=${RBIG:-2}
SERVERS=${SERVERS:-"krill prosody ejabberd"}
STAGES=${STAGES:-"tcp stream tls auth"}
WORKLOADS=${WORKLOADS:-1}
QUICK=${QUICK:-0}
CLIENTS=${CLIENTS:-2}
CURVES=${CURVES:-}
LOGINS=${LOGINS:-3000}
PAIRS=${PAIRS:-50}
TPUT_SECS=${TPUT_SECS:-10s}
HOSTILE=${HOSTILE:-2000}
ATTACK_SECS=${ATTACK_SECS:-90s}
NOFILE=20000
WORK=${WORK:-/tmp/krill-compare}
cpu=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')
MACHINE=${MACHINE:-$(nproc)vcpu-$(echo "$cpu" | awk '{print tolower($1"-"$2)}' | tr -cd 'a-z0-9-')}
OUT=${OUT:-bench/results/$(date -u +%F)-$MACHINE}
if [ "$QUICK" = 1 ]; then
	SERVERS=krill N=${QUICK_N:-2000} R=1 NBIG=0 HOSTILE=500 ATTACK_SECS=70s LOGINS=1000 TPUT_SECS=5s
	OUT=${QUICK_OUT:-$WORK/quick}
	rm -f "$OUT/results.jsonl" "$OUT/terminal.txt"
fi
PASSWORD="bench password"
KB="$ROOT/bin/krill-bench"
KRILL="$ROOT/bin/krill"
ACCOUNTS=$N
[ "$NBIG" -gt "$ACCOUNTS" ] && ACCOUNTS=$NBIG

log() { printf '\n== %s ==\n' "$*" >&2; }
die() { echo "compare.sh: $*" >&2; exit 1; }

if [ "$SERVERS" != krill ] && [ "$(id -u)" != 0 ]; then
	die "run as root (it installs packages and starts servers as their users)"
fi
mkdir -p "$WORK" "$OUT"
echo "compare.sh: servers: $SERVERS; results in $OUT (work files in $WORK)" >&2

need_pkgs=()
case " $SERVERS " in *" prosody "*) command -v prosody >/dev/null || need_pkgs+=(prosody) ;; esac
case " $SERVERS " in *" ejabberd "*) command -v ejabberdctl >/dev/null || need_pkgs+=(ejabberd) ;; esac
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing ${need_pkgs[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null
fi
# The packages start their own daemons on install; none may run here.
if [ "$SERVERS" != krill ]; then
	systemctl stop prosody ejabberd 2>/dev/null || true
	service prosody stop 2>/dev/null || true
	service ejabberd stop 2>/dev/null || true
fi

log "building"
CGO_ENABLED=0 go build -trimpath -o "$KRILL" ./cmd/krill
CGO_ENABLED=0 go build -trimpath -o "$KB" ./bench/cmd/krill-bench

# One ECDSA P-256 certificate for Prosody and ejabberd, the kind of key
# Krill's development certificate has, so that the handshakes cost the
# same signature.
if [ ! -s "$WORK/cert.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
		-subj /CN=localhost -addext subjectAltName=DNS:localhost \
		-keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
	cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/combined.pem"
fi

# ---------------------------------------------------------------- Krill
KDATA="$WORK/krill-data"
krill_provision() {
	mkdir -p "$KDATA"
	local have
	have=$("$KRILL" user list --data_dir="$KDATA" 2>/dev/null | grep -c '^bench' || true)
	if [ "$have" -lt "$ACCOUNTS" ]; then
		log "krill: adding $ACCOUNTS accounts"
		time (seq "$have" $((ACCOUNTS - 1)) | awk -v p="$PASSWORD" '{print "bench"$1"@localhost " p}' |
			"$KRILL" user add --data_dir="$KDATA" >/dev/null)
	fi
}
# krill_start MODE: idle raises the pre-auth deadline and disables idle
# pings so nothing moves during a long idle stage; default keeps both.
krill_start() {
	local extra=()
	[ "$1" = idle ] && extra=(KRILL_PREAUTH_TIMEOUT=30m KRILL_C2S_IDLE_PING=0s)
	# The web listener for the WebSocket stages: over TLS for wss*.
	case "${CUR_STAGE:-}" in
	wss*) extra+=(KRILL_WEB_LISTEN=127.0.0.1:5443 KRILL_WEB_TLS=true) ;;
	ws*) extra+=(KRILL_WEB_LISTEN=127.0.0.1:5443 KRILL_WEB_TLS=false KRILL_C2S_ALLOW_PLAINTEXT=true) ;;
	esac
	env KRILL_DATA_DIR="$KDATA" KRILL_C2S_LISTEN=127.0.0.1:5222 KRILL_C2S_DIRECT_TLS_LISTEN= KRILL_S2S_LISTEN= \
		KRILL_ADMIN_LISTEN=127.0.0.1:5280 KRILL_LOG_FORMAT=json KRILL_LOG_LEVEL=warn "${extra[@]}" \
		prlimit --nofile=$NOFILE:$NOFILE "$KRILL" serve >"$WORK/krill.log" 2>&1 &
	SERVER_PID=$!
	PIDARGS=(-pids "$SERVER_PID")
	# Krill's Go heap and stacks, from its admin listener's /metrics.
	METRICS=(-metrics http://127.0.0.1:5280/metrics)
	ADDR=127.0.0.1:5222
	WS_ADDR=127.0.0.1:5443 WSS_ADDR=127.0.0.1:5443 WS_PATH=/xmpp-websocket
	wait_port 5222
}
krill_stop() { stop_pid "$SERVER_PID"; }

# -------------------------------------------------------------- Prosody
PDIR="$WORK/prosody"
prosody_config() { # $1: idle|default
	mkdir -p "$PDIR/data"
	local timeout=""
	[ "$1" = idle ] && timeout='c2s_timeout = 3600'
	cat >"$PDIR/prosody.cfg.lua" <<-LUA
	-- Written by bench/scripts/compare.sh.
	daemonize = false
	run_as_root = true
	pidfile = "$PDIR/prosody.pid"
	data_path = "$PDIR/data"
	log = { warn = "$PDIR/prosody.log" }
	network_backend = "epoll"
	network_settings = { tcp_backlog = 4096, nagle = false }
	c2s_ports = { 5322 }
	c2s_interfaces = { "127.0.0.1" }
	modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "version", "offline", "websocket" }
	http_ports = { 5380 }
	http_interfaces = { "127.0.0.1" }
	https_ports = { 5381 }
	https_interfaces = { "127.0.0.1" }
	https_ssl = { certificate = "$WORK/cert.pem", key = "$WORK/key.pem" }
	-- ws:// as secure, as Krill's ws stages allow SASL without TLS: the
	-- ws stage would get no features otherwise (c2s_require_encryption).
	consider_websocket_secure = true
	modules_disabled = { "s2s" }
	c2s_require_encryption = true
	authentication = "internal_hashed"
	password_hash = "SHA-256"
	storage = "internal"
	$timeout
	certificates = "$PDIR/certs"
	VirtualHost "localhost"
	  ssl = { certificate = "$WORK/cert.pem", key = "$WORK/key.pem" }
	LUA
	mkdir -p "$PDIR/certs"
}
prosody_provision() {
	local acct="$PDIR/data/localhost/accounts"
	if [ ! -e "$acct/bench$((N - 1)).dat" ]; then
		log "prosody: writing $N account files"
		"$KB" provision-prosody -dir "$acct" -n "$N" -password "$PASSWORD"
	fi
	# Rosters and offline stores from earlier runs would grow the baseline.
	rm -rf "$PDIR/data/localhost/roster" "$PDIR/data/localhost/offline"
}
prosody_start() {
	prosody_config "$1"
	rm -f "$PDIR/prosody.pid"
	prlimit --nofile=$NOFILE:$NOFILE prosody --config "$PDIR/prosody.cfg.lua" -F >"$PDIR/stdout.log" 2>&1 &
	SERVER_PID=$!
	PIDARGS=(-pids "$SERVER_PID")
	METRICS=()
	ADDR=127.0.0.1:5322
	WS_ADDR=127.0.0.1:5380 WSS_ADDR=127.0.0.1:5381 WS_PATH=/xmpp-websocket
	wait_port 5322
}
prosody_stop() { stop_pid "$SERVER_PID"; }

# ------------------------------------------------------------- ejabberd
EDIR="$WORK/ejabberd"
EJ=(ejabberdctl --ctl-config "$EDIR/ejabberdctl.cfg" --config "$EDIR/ejabberd.yml" --spool "$EDIR/spool" --logs "$EDIR/logs" --node ejabberd@localhost)
ejabberd_config() { # $1: idle|default
	mkdir -p "$EDIR/spool" "$EDIR/logs"
	chown -R ejabberd:ejabberd "$EDIR"
	cp "$WORK/combined.pem" "$EDIR/combined.pem"
	chown ejabberd "$EDIR/combined.pem"
	# Debian's ejabberdctl.cfg names /etc's ejabberd.yml, which would
	# override --config: a copy of it without that line.
	grep -v '^EJABBERD_CONFIG_PATH=\|^EJABBERD_PID_PATH=' /etc/ejabberd/ejabberdctl.cfg >"$EDIR/ejabberdctl.cfg"
	echo "EJABBERD_PID_PATH=$EDIR/ejabberd.pid" >>"$EDIR/ejabberdctl.cfg"
	local neg=""
	[ "$1" = idle ] && neg='negotiation_timeout: 3600'
	cat >"$EDIR/ejabberd.yml" <<-YML
	# Written by bench/scripts/compare.sh.
	hosts: ["localhost"]
	loglevel: warning
	certfiles: ["$EDIR/combined.pem"]
	$neg
	listen:
	  - port: 5422
	    ip: "127.0.0.1"
	    module: ejabberd_c2s
	    backlog: 4096
	    max_stanza_size: 262144
	    shaper: none
	    access: c2s
	    starttls_required: true
	  - port: 5480
	    ip: "127.0.0.1"
	    module: ejabberd_http
	    request_handlers:
	      /api: mod_http_api
	  - port: 5482
	    ip: "127.0.0.1"
	    module: ejabberd_http
	    backlog: 4096
	    request_handlers:
	      /ws: ejabberd_http_ws
	  - port: 5443
	    ip: "127.0.0.1"
	    module: ejabberd_http
	    backlog: 4096
	    tls: true
	    request_handlers:
	      /ws: ejabberd_http_ws
	auth_method: internal
	auth_password_format: scram
	auth_scram_hash: sha256
	acl:
	  loopback:
	    ip: 127.0.0.0/8
	access_rules:
	  c2s:
	    allow: all
	shaper_rules:
	  max_user_sessions: 100
	  c2s_shaper: none
	api_permissions:
	  "bench provisioning":
	    from: [mod_http_api]
	    who:
	      ip: 127.0.0.0/8
	    what: "register"
	modules:
	  mod_roster: {}
	  mod_disco: {}
	  mod_ping: {}
	  mod_version: {}
	  mod_offline: {}
	  mod_http_api: {}
	YML
	chown ejabberd "$EDIR/ejabberd.yml"
}
ejabberd_start() {
	ejabberd_config "$1"
	# Started as the ejabberd user with setpriv, not su: su would reset
	# the open-files limit to 1024.
	prlimit --nofile=$NOFILE:$NOFILE setpriv --reuid ejabberd --regid ejabberd --init-groups \
		env HOME=/var/lib/ejabberd "${EJ[@]}" foreground >"$EDIR/stdout.log" 2>&1 &
	SERVER_PID=$!
	PIDARGS=(-pids "$SERVER_PID")
	METRICS=()
	ADDR=127.0.0.1:5422
	WS_ADDR=127.0.0.1:5482 WSS_ADDR=127.0.0.1:5443 WS_PATH=/ws
	wait_port 5422 120
}
ejabberd_provision() {
	ejabberd_start idle
	log "ejabberd: registering $N accounts"
	"$KB" provision-ejabberd -api http://127.0.0.1:5480/api -n "$N" -password "$PASSWORD"
	ejabberd_stop
}
ejabberd_stop() {
	setpriv --reuid ejabberd --regid ejabberd --init-groups env HOME=/var/lib/ejabberd "${EJ[@]}" stop >/dev/null 2>&1 || true
	stop_pid "$SERVER_PID"
}

# ---------------------------------------------------------------- helpers
wait_port() { # port [seconds]
	local i
	for ((i = 0; i < ${2:-30} * 10; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			sleep 1 # let the server finish starting
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || die "server exited while starting (see $WORK)"
		sleep 0.1
	done
	die "nothing listening on port $1"
}
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	# The kernel frees the connections' memory asynchronously.
	sleep 2
}
JSON="$OUT/results.jsonl"
TERMINAL="$OUT/terminal.txt"
bench_idle() { # server n repeat stage
	local addr=$ADDR
	case "$4" in
	wss*) addr=$WSS_ADDR ;;
	ws*) addr=$WS_ADDR ;;
	esac
	"$KB" idle -server "$1" -addr "$addr" -web-path "${WS_PATH:-/xmpp-websocket}" "${PIDARGS[@]}" "${METRICS[@]}" -n "$2" -repeat "$3" -stage "$4" \
		-clients "$CLIENTS" -curves "$CURVES" -password "$PASSWORD" -json "$JSON" | tee -a "$TERMINAL" ||
		echo "$1 $4 n=$2 rep=$3: FAILED" | tee -a "$TERMINAL"
}

# ------------------------------------------------------------ the runs
{
	echo "date: $(date -u +%FT%TZ)"
	echo "machine: $(nproc) vCPU $cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
	echo "go: $(go version)"
	echo "krill: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
	# Only the servers measured: the quick suite is Krill alone, whatever else is installed.
	if [[ " $SERVERS " == *" prosody "* ]] && command -v prosody >/dev/null; then
		echo "prosody: $(dpkg-query -W -f '${Version}' prosody)"
	fi
	if [[ " $SERVERS " == *" ejabberd "* ]] && command -v ejabberdctl >/dev/null; then
		echo "ejabberd: $(dpkg-query -W -f '${Version}' ejabberd), erlang $(dpkg-query -W -f '${Version}' erlang-base 2>/dev/null)"
	fi
	echo "servers: $SERVERS"
	echo "results: $OUT"
	echo "N=$N R=$R NBIG=$NBIG clients=$CLIENTS"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

for s in $SERVERS; do
	"${s}_provision"
done

for s in $SERVERS; do
	for stage in $STAGES; do
		for rep in $(seq 1 "$R"); do
			log "$s idle $stage n=$N repeat $rep"
			CUR_STAGE=$stage "${s}_start" idle
			bench_idle "$s" "$N" "$rep" "$stage"
			"${s}_stop"
		done
	done
done

if [ "$NBIG" -gt 0 ] && [[ " $SERVERS " == *" krill "* ]]; then
	for stage in $STAGES; do
		for rep in $(seq 1 "$RBIG"); do
			log "krill idle $stage n=$NBIG repeat $rep"
			CUR_STAGE=$stage krill_start idle
			bench_idle krill "$NBIG" "$rep" "$stage"
			krill_stop
		done
	done
fi

if [ "$WORKLOADS" = 1 ]; then
	for s in $SERVERS; do
		log "$s login rate"
		"${s}_start" default
		"$KB" login-rate -server "$s" -addr "$ADDR" "${PIDARGS[@]}" -logins "$LOGINS" -accounts 1000 \
			-password "$PASSWORD" -json "$JSON" | tee -a "$TERMINAL" || echo "$s login-rate FAILED" | tee -a "$TERMINAL"
		"${s}_stop"
		log "$s throughput"
		"${s}_start" default
		"$KB" throughput -server "$s" -addr "$ADDR" "${PIDARGS[@]}" -pairs "$PAIRS" -duration "$TPUT_SECS" \
			-password "$PASSWORD" -json "$JSON" | tee -a "$TERMINAL" || echo "$s throughput FAILED" | tee -a "$TERMINAL"
		"${s}_stop"
		log "$s attack"
		"${s}_start" default
		"$KB" attack -server "$s" -addr "$ADDR" "${PIDARGS[@]}" -hostile "$HOSTILE" -duration "$ATTACK_SECS" \
			-password "$PASSWORD" -json "$JSON" | tee -a "$TERMINAL" || echo "$s attack FAILED" | tee -a "$TERMINAL"
		"${s}_stop"
	done
fi

pgrep -x epmd >/dev/null && epmd -kill >/dev/null 2>&1 || true
"$KB" report -dir "$OUT"
echo "results in $OUT" >&2
