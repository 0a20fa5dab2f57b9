#!/usr/bin/env bash
# muc-compare.sh: groupchat fan-out, Krill against Prosody and ejabberd.
#
# As root (it starts each server as its own unprivileged user with setpriv:
# Krill as nobody, Prosody as prosody, ejabberd as ejabberd). Nothing of the
# system's is used or touched but the installed packages' programs: every
# server gets its own configuration, data and log directories under WORK,
# its own loopback address and port, and ejabberd its own Erlang node name,
# cookie (HOME=WORK/ejabberd/home) and distribution port (ERL_DIST_PORT: no
# epmd at all). For each server and room size it starts a fresh server,
# creates accounts bench0..benchN, runs `krill-bench muc` R times (a fresh
# room each run) and stops the server; then it prints one table.
#
# Knobs (environment): SIZES ("1000"; add 10000 for the big room), R (3),
# SERVERS ("krill prosody ejabberd"), MSGS (50), RATE (5, messages/s),
# MSGS_BIG and RATE_BIG (20 and 1, for rooms over 5,000), BROADCAST
# ("moderator"), JOIN_TIMEOUT (10m: a server that has not taken every
# occupant in by then fails the run, with the count it reached), OUT
# (bench/results/DATE-muc), WORK (a new /tmp/krill-muc.XXXX).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
SIZES=${SIZES:-1000}
R=${R:-3}
SERVERS=${SERVERS:-"krill prosody ejabberd"}
MSGS=${MSGS:-50}
RATE=${RATE:-5}
MSGS_BIG=${MSGS_BIG:-20}
RATE_BIG=${RATE_BIG:-1}
BROADCAST=${BROADCAST:-moderator}
JOIN_TIMEOUT=${JOIN_TIMEOUT:-10m}
NOFILE=20000
PASSWORD="bench password"
OUT=${OUT:-bench/results/$(date -u +%F)-muc}
WORK=${WORK:-$(mktemp -d /tmp/krill-muc.XXXXXX)}
mkdir -p "$WORK/bin" "$OUT"
chmod 755 "$WORK"
KB="$WORK/bin/krill-bench"
KRILL="$WORK/bin/krill"
JSON="$OUT/results.jsonl"
# Addresses and ports of their own, so that nothing else on the machine
# (another bench, a system service) collides.
K_ADDR=127.0.0.21:25222
P_ADDR=127.0.0.22:25322
E_ADDR=127.0.0.23:25422
E_API=127.0.0.23:25480
E_DIST=25470

log() { printf '\n== %s ==\n' "$*" >&2; }
die() { echo "muc-compare.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it starts each server as its own unprivileged user)"
echo "muc-compare.sh: servers: $SERVERS; sizes: $SIZES; results in $OUT; work files in $WORK" >&2

log building
CGO_ENABLED=0 go build -trimpath -o "$KRILL" ./cmd/krill
CGO_ENABLED=0 go build -trimpath -o "$KB" ./bench/cmd/krill-bench

# One ECDSA P-256 certificate for Prosody and ejabberd, the kind of key
# Krill's development certificate has.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost,DNS:conference.localhost \
	-keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/combined.pem"

SERVER_PID=
wait_port() { # host:port [seconds]
	local i host=${1%:*} port=${1#*:}
	for ((i = 0; i < ${2:-30} * 10; i++)); do
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
			sleep 1
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || die "server exited while starting (see $WORK)"
		sleep 0.1
	done
	die "nothing listening on $1"
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
	sleep 2
}
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; true' EXIT

# ---------------------------------------------------------------- Krill
# Raised: muc.max_occupants (1,000 by default) and muc.message_rate (5/s
# per occupant by default; 0 = none). History off (muc.max_history 0).
# No c2s rate limit exists; pre-auth caps are off by default.
KDIR="$WORK/krill"
krill_setup() { # accounts
	rm -rf "$KDIR"
	mkdir -p "$KDIR"
	seq 0 "$1" | awk -v p="$PASSWORD" '{print "bench"$1"@localhost " p}' |
		"$KRILL" user add --data_dir="$KDIR" >/dev/null
	chown -R nobody:nogroup "$KDIR"
}
krill_start() {
	env KRILL_DATA_DIR="$KDIR" KRILL_C2S_LISTEN=$K_ADDR KRILL_C2S_DIRECT_TLS_LISTEN= KRILL_S2S_LISTEN= \
		KRILL_ADMIN_LISTEN= KRILL_LOG_LEVEL=warn KRILL_LOG_FORMAT=json \
		KRILL_MUC_MAX_OCCUPANTS=20000 KRILL_MUC_MESSAGE_RATE=0 KRILL_MUC_MAX_HISTORY=0 KRILL_MUC_MAX_ROOMS_PER_USER=0 \
		prlimit --nofile=$NOFILE:$NOFILE setpriv --reuid nobody --regid nogroup --clear-groups \
		"$KRILL" serve >"$KDIR/krill.log" 2>&1 &
	SERVER_PID=$!
	ADDR=$K_ADDR
	wait_port $K_ADDR
}
krill_stop() { stop_pid "$SERVER_PID"; }

# -------------------------------------------------------------- Prosody
# mod_limits (c2s rate limits) is not loaded, so nothing throttles; Prosody
# 0.12 has no cap on occupants per room. History length 0.
PDIR="$WORK/prosody"
prosody_setup() { # accounts
	rm -rf "$PDIR"
	mkdir -p "$PDIR/data" "$PDIR/certs"
	cp "$WORK/cert.pem" "$WORK/key.pem" "$PDIR/"
	cat >"$PDIR/prosody.cfg.lua" <<-LUA
	-- Written by bench/scripts/muc-compare.sh.
	daemonize = false
	pidfile = "$PDIR/prosody.pid"
	data_path = "$PDIR/data"
	log = { warn = "$PDIR/prosody.log" }
	network_backend = "epoll"
	network_settings = { tcp_backlog = 4096, nagle = false }
	c2s_ports = { ${P_ADDR#*:} }
	c2s_interfaces = { "${P_ADDR%:*}" }
	s2s_ports = { }
	component_ports = { }
	modules_enabled = { "roster", "saslauth", "tls", "disco", "ping" }
	modules_disabled = { "s2s" }
	c2s_require_encryption = true
	authentication = "internal_hashed"
	password_hash = "SHA-256"
	storage = "internal"
	certificates = "$PDIR/certs"
	VirtualHost "localhost"
	  ssl = { certificate = "$PDIR/cert.pem", key = "$PDIR/key.pem" }
	Component "conference.localhost" "muc"
	  muc_room_default_history_length = 0
	  max_history_messages = 0
	  muc_tombstones = false
	LUA
	"$KB" provision-prosody -dir "$PDIR/data/localhost/accounts" -n $(($1 + 1)) -password "$PASSWORD" >/dev/null
	chown -R prosody:prosody "$PDIR"
}
prosody_start() {
	prlimit --nofile=$NOFILE:$NOFILE setpriv --reuid prosody --regid prosody --init-groups \
		env HOME="$PDIR" prosody --config "$PDIR/prosody.cfg.lua" -F >"$PDIR/stdout.log" 2>&1 &
	SERVER_PID=$!
	ADDR=$P_ADDR
	wait_port $P_ADDR
}
prosody_stop() { stop_pid "$SERVER_PID"; }

# ------------------------------------------------------------- ejabberd
# Raised: mod_muc max_users (200 by default) and the rooms' max_users,
# max_fsm_queue (10,000), max_user_sessions; shapers off on c2s
# (c2s_shaper none) and in mod_muc (room, user message and presence
# shapers "none", min_message_interval and min_presence_interval 0, the
# defaults). History 0. max_users_presence (1,000, above which ejabberd
# stops broadcasting presence) is left alone: the room broadcasts
# moderators' presence only anyway.
EDIR="$WORK/ejabberd"
EJ=(env HOME="$EDIR/home" ejabberdctl --ctl-config "$EDIR/ejabberdctl.cfg" --config "$EDIR/ejabberd.yml"
	--config-dir "$EDIR" --spool "$EDIR/spool" --logs "$EDIR/logs" --node krillmuc@localhost)
as_ejabberd() { setpriv --reuid ejabberd --regid ejabberd --init-groups "$@"; }
ejabberd_setup() { # accounts
	rm -rf "$EDIR"
	mkdir -p "$EDIR/spool" "$EDIR/logs" "$EDIR/home"
	cp "$WORK/combined.pem" "$EDIR/combined.pem"
	cat >"$EDIR/ejabberdctl.cfg" <<-CFG
	ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
	EJABBERD_PID_PATH=$EDIR/ejabberd.pid
	# The distribution on a port of its own: no epmd, nothing shared.
	ERL_DIST_PORT=$E_DIST
	INET_DIST_INTERFACE=127.0.0.1
	CFG
	cat >"$EDIR/ejabberd.yml" <<-YML
	# Written by bench/scripts/muc-compare.sh.
	hosts: ["localhost"]
	loglevel: warning
	certfiles: ["$EDIR/combined.pem"]
	max_fsm_queue: 1000000
	listen:
	  - port: ${E_ADDR#*:}
	    ip: "${E_ADDR%:*}"
	    module: ejabberd_c2s
	    backlog: 4096
	    max_stanza_size: 262144
	    shaper: none
	    access: c2s
	    starttls_required: true
	  - port: ${E_API#*:}
	    ip: "${E_API%:*}"
	    module: ejabberd_http
	    request_handlers:
	      /api: mod_http_api
	auth_method: internal
	auth_password_format: scram
	auth_scram_hash: sha256
	access_rules:
	  c2s:
	    allow: all
	  muc_create:
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
	  mod_disco: {}
	  mod_ping: {}
	  mod_http_api: {}
	  mod_muc:
	    host: conference.localhost
	    access_create: muc_create
	    max_users: 20000
	    history_size: 0
	    min_message_interval: 0
	    min_presence_interval: 0
	    room_shaper: none
	    user_message_shaper: none
	    user_presence_shaper: none
	    default_room_options:
	      max_users: 20000
	      persistent: false
	      mam: false
	YML
	chown -R ejabberd:ejabberd "$EDIR"
	ejabberd_start
	"$KB" provision-ejabberd -api "http://$E_API/api" -n $(($1 + 1)) -password "$PASSWORD" >/dev/null
	ejabberd_stop
}
ejabberd_start() {
	# setpriv, not su: su would reset the open-files limit.
	prlimit --nofile=$NOFILE:$NOFILE setpriv --reuid ejabberd --regid ejabberd --init-groups \
		"${EJ[@]}" foreground >"$EDIR/stdout.log" 2>&1 &
	SERVER_PID=$!
	ADDR=$E_ADDR
	wait_port $E_ADDR 120
}
ejabberd_stop() {
	as_ejabberd "${EJ[@]}" stop >/dev/null 2>&1 || true
	stop_pid "$SERVER_PID"
}

# ------------------------------------------------------------ the runs
{
	echo "date: $(date -u +%FT%TZ)"
	echo "machine: $(nproc) vCPU $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'), Linux $(uname -r)"
	echo "go: $(go version)"
	echo "krill: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
	echo "prosody: $(dpkg-query -W -f '${Version}' prosody)"
	echo "ejabberd: $(dpkg-query -W -f '${Version}' ejabberd), erlang $(dpkg-query -W -f '${Version}' erlang-base 2>/dev/null)"
	echo "sizes: $SIZES; runs: $R; broadcast: $BROADCAST"
} >>"$OUT/machine.txt"

for size in $SIZES; do
	msgs=$MSGS rate=$RATE
	if [ "$size" -gt 5000 ]; then msgs=$MSGS_BIG rate=$RATE_BIG; fi
	for s in $SERVERS; do
		log "$s: $((size + 1)) accounts"
		"${s}_setup" "$size"
		"${s}_start"
		for rep in $(seq 1 "$R"); do
			log "$s muc n=$size run $rep (load $(cut -d' ' -f1-3 /proc/loadavg))"
			if ! prlimit --nofile=$NOFILE:$NOFILE "$KB" muc -server "$s" -addr "$ADDR" -pids "$SERVER_PID" \
				-room "r$rep-$size@conference.localhost" -n "$size" -messages "$msgs" -rate "$rate" \
				-presence-broadcast "$BROADCAST" -join-timeout "$JOIN_TIMEOUT" -repeat "$rep" \
				-password "$PASSWORD" -json "$JSON" 2> >(tee "$WORK/stderr.txt" >&2) | tee -a "$OUT/terminal.txt"; then
				sleep 1
				echo "$s muc n=$size run $rep: FAILED: $(tr '\r' '\n' <"$WORK/stderr.txt" | tail -1)" | tee -a "$OUT/terminal.txt"
			fi
		done
		"${s}_stop"
	done
done
"$KB" report -dir "$OUT" | sed -n '/^## MUC fan-out/,$p'
echo "results in $OUT" >&2
