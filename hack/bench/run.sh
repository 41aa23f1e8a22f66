#!/usr/bin/env bash
# Token hot-path benchmark against the physical limit, in one run:
#
#   reference  pgbench -S -M prepared -c 32 -j 2 -T D on the machine's
#              PostgreSQL (one primary-key SELECT per transaction: one
#              database round trip);
#   measured   GET /api/v1.0/alpha/token on a real `tokenstore serve`
#              process (same PostgreSQL), 32 keep-alive connections from
#              wrk (C, 2 threads, like pgbench's -j 2) in its own process;
#              also from hack/bench/loadgen (Go), whose own CPU use on the
#              shared cores is reported alongside as a second column;
#   ceiling    the same wrk load on hack/bench/bare, a plain net/http
#              server giving the same answer and doing nothing else: the
#              most any Go HTTP service can serve here, so tokenstore over
#              it is the share its own work leaves of that (a figure that
#              moves less with the machine than the ratio to pgbench).
#
# Both alternate ROUNDS times; each round gives a ratio tokenstore rps /
# pgbench tps, and the medians are what counts (the machine is shared and
# noisy, a ratio measured in the same minute is not). Also measured: peak
# RSS (VmHWM) of the instance under that load with CREDENTIALS stored, and
# start-to-ready (/readyz) of a fresh instance on an empty database with
# MIGRATE_ON_START=true.
#
# Everything runs on loopback; the databases it creates are dropped at the
# end. The machine's PostgreSQL is only used, never stopped or changed.
#
#   hack/bench/run.sh                  # prints the table, updates docs/performance.md
#   ROUNDS=5 DURATION=10 CREDENTIALS=100000 WRITE_DOCS=0 hack/bench/run.sh
#   TOKENSTORE_BIN=/tmp/variant/tokenstore WRITE_DOCS=0 hack/bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-32}
CREDENTIALS=${CREDENTIALS:-100000}
SESSIONS=${SESSIONS:-1000}
PEOPLE=${PEOPLE:-$CLIENTS}
PORT=${PORT:-18080}
WRITE_DOCS=${WRITE_DOCS:-1}
PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
export PGHOST PGPORT PGUSER

(( DURATION >= 1 && DURATION <= 60 )) || { echo "DURATION must be 1..60 seconds" >&2; exit 1; }
(( ROUNDS >= 1 && ROUNDS <= 9 )) || { echo "ROUNDS must be 1..9" >&2; exit 1; }

need_wrk
PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -n1 || true)
[[ -x "$PGBENCH" ]] || { echo "pgbench not found: apt-get install postgresql-contrib (or postgresql-client)" >&2; exit 1; }
hack/ensure-postgres.sh

work=$(mktemp -d)
suffix=$$_$(date +%s)
DB_PGB=bench_pgbench_$suffix
DB_TS=bench_ts_$suffix
DB_START=bench_start_$suffix
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for d in "$DB_PGB" "$DB_TS" "$DB_START"; do
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT


log "building tokenstore, fixture and loadgen"
# TOKENSTORE_BIN: a binary built elsewhere (a variant under comparison)
# instead of this tree's.
if [[ -n "${TOKENSTORE_BIN:-}" ]]; then cp "$TOKENSTORE_BIN" "$work/tokenstore"; else CGO_ENABLED=0 go build -trimpath -o "$work/tokenstore" ./cmd/tokenstore; fi
go build -o "$work/fixture" ./hack/bench/fixture
go build -o "$work/loadgen" ./hack/bench/loadgen
go build -o "$work/bare" ./hack/bench/bare

for d in "$DB_PGB" "$DB_TS" "$DB_START"; do psql -qX -d postgres -c "CREATE DATABASE $d" >/dev/null; done
log "pgbench -i (scale 1) into $DB_PGB"
"$PGBENCH" -i -q -s 1 "$DB_PGB" >/dev/null 2>&1

log "fixture: token provider OP, $CREDENTIALS credentials, $SESSIONS sessions"
t0=$(date +%s)
"$work/fixture" -db "postgres://postgres@127.0.0.1:5432/$DB_TS?sslmode=disable" -dir "$work" \
  -credentials "$CREDENTIALS" -sessions "$SESSIONS" -listen "127.0.0.1:$PORT" -lifetime 30m >"$work/fixture.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 1200); do [[ -f "$work/ready" ]] && break; kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/fixture.log" >&2; exit 1; }; sleep 0.5; done
[[ -f "$work/ready" ]] || { echo "fixture not ready after 10 minutes" >&2; exit 1; }
log "seeded in $(( $(date +%s) - t0 )) s"

# start_instance PORT DBURL LOGFILE: starts `tokenstore serve` with the
# fixture's settings and prints "PID MILLISECONDS-TO-READY".
start_instance() {
  local port=$1 db=$2 logf=$3 pid start end
  start=$(date +%s%N)
  ( set -a; . "$work/env"; set +a
    export TOKENSTORE_LISTEN_ADDRESS="127.0.0.1:$port" TOKENSTORE_DATABASE_URL="$db" TOKENSTORE_MIGRATE_ON_START=true
    # Several instances on one machine, one benchmark user flooding the
    # token endpoint: no metrics listener (its :9090 would clash) and no
    # rate limits (they would answer 429 instead of tokens).
    export TOKENSTORE_METRICS_ADDRESS= TOKENSTORE_RATE_LIMIT_PER_ADDRESS=0 TOKENSTORE_RATE_LIMIT_PER_PRINCIPAL=0
    exec "$work/tokenstore" serve ) >"$logf" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then
      end=$(date +%s%N); echo "$pid $(( (end - start) / 1000000 ))"; return 0
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$logf" >&2; return 1; }
    sleep 0.01
  done
  kill "$pid"; echo "instance on $port not ready after 30 s" >&2; return 1
}

log "start to ready: fresh instance, empty database, MIGRATE_ON_START=true"
read -r spid start_ms < <(start_instance $((PORT + 1)) "postgres://postgres@127.0.0.1:5432/$DB_START?sslmode=disable" "$work/start.log")
kill "$spid"; wait "$spid" 2>/dev/null || true

log "starting the measured instance"
read -r tpid ready_ms < <(start_instance "$PORT" "postgres://postgres@127.0.0.1:5432/$DB_TS?sslmode=disable" "$work/tokenstore.log")
pids+=("$tpid")
# The provider registry fills from PROVIDERS_FILE before /readyz answers;
# one token request proves the path works before measuring.
first=$(head -n1 "$work/sessions")
code=$(curl -s -o /dev/null -w '%{http_code}' -b "tokenstore_session=$first" "http://127.0.0.1:$PORT/api/v1.0/alpha/token")
[[ "$code" == 200 ]] || { echo "token request answered $code" >&2; tail -n 20 "$work/tokenstore.log" >&2; exit 1; }

# run_wrk (lib.sh) sends every request as the next person of the session
# file, each of wrk's threads starting at a different one: the same mix of
# people the Go loadgen sends.
# Main figure: PEOPLE clients (by default one per connection, each its own
# person, session and credential) calling in a loop, as apps do. Spread
# figure: every request from one of SESSIONS people in turn, so each
# person's cache entry serves only a few requests before it lapses.
head -n "$PEOPLE" "$work/sessions" >"$work/sessions.hot"
"$work/bare" -listen "127.0.0.1:$((PORT + 2))" >"$work/bare.log" 2>&1 &
bpid=$!
pids+=("$bpid")
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$((PORT + 2))/" 2>/dev/null && break; sleep 0.05; done
curl -fsS -o /dev/null "http://127.0.0.1:$((PORT + 2))/" || { echo "the bare server did not start:" >&2; cat "$work/bare.log" >&2; exit 1; }
# CPU per answer, beside the rates: every round also reads the ticks the
# server spent (PostgreSQL's whole server for pgbench's transactions;
# the serve process, and PostgreSQL for its cache misses, for the token
# answers; the bare server's) and its client's (pgbench's, wrk's), per
# answer. Unlike the rates, these do not count the time a core sat idle
# waiting for a wake-up, which differs between a Go server (a few
# threads) and PostgreSQL (a process per connection).
pg_postmaster optional
declare -a R_TPS R_RPS R_RATIO R_P50 R_P99 R_SPREAD R_GO R_BARE R_OFBARE
declare -a C_PG C_PGB C_TS C_TSPG C_WRK C_BARE C_BWRK C_RATIO
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: pgbench -S -M prepared -c $CLIENTS -j 2 -T $DURATION"
  kids=$(pg_children); pg0=$(pg_server_ticks)
  timed "$PGBENCH" -n -S -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" "$DB_PGB"
  pg_reaped "$kids"
  pg1=$(pg_server_ticks)
  tps=$(sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\)/\1/p' <<<"$OUT")
  txs=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' <<<"$OUT")
  [[ -n "$tps" && -n "$txs" ]] || { echo "pgbench failed:" >&2; echo "$OUT" >&2; exit 1; }
  C_PG+=("$(if [[ -n "$postmaster" ]]; then per "$txs" $((pg1 - pg0)) us; else echo -; fi)"); C_PGB+=("$(per "$txs" "$CT" us)")
  log "round $r/$ROUNDS: wrk -t 2 -c $CLIENTS -d ${DURATION}s, $PEOPLE people"
  ts0=$(cpu "$tpid"); pg0=$(pg_server_ticks)
  timed run_wrk "http://127.0.0.1:$PORT" "$work/sessions.hot" cookie /api/v1.0/alpha/token "$DURATION"
  ts1=$(cpu "$tpid"); pg1=$(pg_server_ticks)
  read -r rps p50 p99 errs n <<<"$OUT"
  [[ "$rps" =~ ^[0-9.]+$ ]] || { echo "$OUT" >&2; exit 1; }
  (( errs == 0 )) || { echo "wrk: $errs failed requests" >&2; tail -n 20 "$work/tokenstore.log" >&2; exit 1; }
  C_TS+=("$(per "$n" $((ts1 - ts0)) us)"); C_TSPG+=("$(per "$n" $((ts1 - ts0 + pg1 - pg0)) us)"); C_WRK+=("$(per "$n" "$CT" us)")
  C_RATIO+=("$(awk -v a="${C_PG[-1]}" -v b="${C_TSPG[-1]}" 'BEGIN{ if (a == "-") print "-"; else printf "%.2f", a/b }')")
  log "round $r/$ROUNDS: wrk on the bare net/http server"
  b0=$(cpu "$bpid")
  timed run_wrk "http://127.0.0.1:$((PORT + 2))" "$work/sessions.hot" cookie /api/v1.0/alpha/token "$DURATION"
  b1=$(cpu "$bpid")
  read -r brps _ _ errs n <<<"$OUT"
  [[ "$brps" =~ ^[0-9.]+$ ]] || { echo "$OUT" >&2; exit 1; }
  (( errs == 0 )) || { echo "wrk on the bare server: $errs failed requests" >&2; exit 1; }
  C_BARE+=("$(per "$n" $((b1 - b0)) us)"); C_BWRK+=("$(per "$n" "$CT" us)")
  log "round $r/$ROUNDS: wrk, $SESSIONS people in turn"
  read -r rps2 _ _ errs _ < <(run_wrk "http://127.0.0.1:$PORT" "$work/sessions" cookie /api/v1.0/alpha/token "$DURATION")
  [[ -n "$rps2" ]] || exit 1
  (( errs == 0 )) || { echo "wrk: $errs failed requests" >&2; exit 1; }
  log "round $r/$ROUNDS: Go loadgen -c $CLIENTS -d ${DURATION}s, $PEOPLE people"
  res=$("$work/loadgen" -url "http://127.0.0.1:$PORT" -sessions "$work/sessions.hot" -c "$CLIENTS" -d "${DURATION}s")
  if grep -q '"errors"' <<<"$res"; then echo "loadgen errors: $res" >&2; exit 1; fi
  R_GO+=("$(json rps "$res")")
  R_SPREAD+=("$rps2")
  R_TPS+=("$tps"); R_RPS+=("$rps"); R_P50+=("$p50"); R_P99+=("$p99")
  R_RATIO+=("$(awk -v a="$rps" -v b="$tps" 'BEGIN{printf "%.2f", a/b}')")
  R_BARE+=("$brps"); R_OFBARE+=("$(awk -v a="$rps" -v b="$brps" 'BEGIN{printf "%.2f", a/b}')")
done
hwm=$(awk '/VmHWM/{print $2}' "/proc/$tpid/status")
rss=$(awk '/VmRSS/{print $2}' "/proc/$tpid/status")

m_tps=$(median "${R_TPS[@]}"); m_rps=$(median "${R_RPS[@]}"); m_ratio=$(median "${R_RATIO[@]}")
m_p50=$(median "${R_P50[@]}"); m_p99=$(median "${R_P99[@]}"); m_spread=$(median "${R_SPREAD[@]}"); m_go=$(median "${R_GO[@]}")
m_bare=$(median "${R_BARE[@]}"); m_ofbare=$(median "${R_OFBARE[@]}")

machine=$(machine_line "$("$PGBENCH" --version | head -n1)")

table=$(
  echo "| round | pgbench -S tps | tokenstore req/s (wrk) | ratio | p50 ms | p99 ms | req/s, $SESSIONS people in turn (ratio) | req/s from the Go loadgen (ratio) | bare net/http req/s (ratio) | tokenstore / bare |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for i in "${!R_TPS[@]}"; do
    printf '| %d | %.0f | %.0f | %s | %s | %s | %.0f (%.2f) | %.0f (%.2f) | %.0f (%.2f) | %s |\n' $((i + 1)) "${R_TPS[$i]}" "${R_RPS[$i]}" "${R_RATIO[$i]}" "${R_P50[$i]}" "${R_P99[$i]}" \
      "${R_SPREAD[$i]}" "$(awk -v a="${R_SPREAD[$i]}" -v b="${R_TPS[$i]}" 'BEGIN{print a/b}')" \
      "${R_GO[$i]}" "$(awk -v a="${R_GO[$i]}" -v b="${R_TPS[$i]}" 'BEGIN{print a/b}')" \
      "${R_BARE[$i]}" "$(awk -v a="${R_BARE[$i]}" -v b="${R_TPS[$i]}" 'BEGIN{print a/b}')" "${R_OFBARE[$i]}"
  done
  printf '| **median** | %.0f | %.0f | **%s** | %s | %s | %.0f | %.0f | %.0f | **%s** |\n' "$m_tps" "$m_rps" "$m_ratio" "$m_p50" "$m_p99" "$m_spread" "$m_go" "$m_bare" "$m_ofbare"
)
cputable=$(
  echo "| round | PostgreSQL per pgbench transaction | pgbench (client) | tokenstore per token answer: serve + PostgreSQL (serve alone) | wrk (client) | bare net/http per answer | wrk (client) | PostgreSQL / tokenstore |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  for i in "${!C_PG[@]}"; do
    printf '| %d | %s µs | %s µs | %s µs (%s µs) | %s µs | %s µs | %s µs | %s |\n' $((i + 1)) "${C_PG[$i]}" "${C_PGB[$i]}" "${C_TSPG[$i]}" "${C_TS[$i]}" "${C_WRK[$i]}" "${C_BARE[$i]}" "${C_BWRK[$i]}" "${C_RATIO[$i]}"
  done
  printf '| **median** | %s µs | %s µs | %s µs (%s µs) | %s µs | %s µs | %s µs | **%s** |\n' "$(median "${C_PG[@]}")" "$(median "${C_PGB[@]}")" "$(median "${C_TSPG[@]}")" "$(median "${C_TS[@]}")" \
    "$(median "${C_WRK[@]}")" "$(median "${C_BARE[@]}")" "$(median "${C_BWRK[@]}")" "$(median "${C_RATIO[@]}")"
)
extra=$(
  printf '| peak RSS (VmHWM) under load, %s credentials stored | %.1f MiB (RSS at the end %.1f MiB) |\n' "$CREDENTIALS" "$(awk -v k="$hwm" 'BEGIN{print k/1024}')" "$(awk -v k="$rss" 'BEGIN{print k/1024}')"
  printf '| start to ready (/readyz), empty database, migrations applied | %s ms |\n' "$start_ms"
  printf '| start to ready, %s credentials stored, nothing to migrate | %s ms |\n' "$CREDENTIALS" "$ready_ms"
)

echo
echo "machine: $machine"
echo "$table"
echo
echo "CPU per answer:"
echo "$cputable"
echo
echo "| measure | value |"
echo "| --- | --- |"
echo "$extra"

[[ "$WRITE_DOCS" == 1 ]] || exit 0
section=$(cat <<DOC
<!-- hack/bench/run.sh: begin (generated; re-run to replace) -->
## Token hot path against pgbench (\`hack/bench/run.sh\`)

\`GET /api/v1.0/alpha/token\` on a real \`tokenstore serve\` process
(PostgreSQL on 127.0.0.1, per-replica cache on, as \`serve\` runs it), from
\`wrk -t 2 -c $CLIENTS\` in its own process: $CLIENTS keep-alive connections,
$DURATION s per round, every request from the next of $PEOPLE people (each
with its own session and credential), access tokens still valid;
$CREDENTIALS credentials stored. wrk is a C client like pgbench, with the
same two threads, so that the load generator takes about as much of the
shared cores on both sides. The column "$SESSIONS people in turn" spreads
requests over that many people, so that each cache entry serves only a few
requests before it lapses (more database reads). The Go loadgen column is
the same load as the main figure from \`hack/bench/loadgen\` (Go, one
goroutine per connection), which uses more of the two cores itself. The
last two are the ceiling: the same wrk load on \`hack/bench/bare\`, a
plain net/http server that gives the same 157-byte answer with the same
headers and does nothing else, and tokenstore's requests/s over it — the
share of the most any Go HTTP service could serve here that tokenstore's
own work (routing, the request log line, session and credential caches,
AES-GCM, metrics, and the garbage they make) leaves.
Reference in the same run, alternating with it: \`pgbench -S -M prepared
-c $CLIENTS -j 2 -T $DURATION\` (scale 1) on the same server — one primary-key
SELECT per transaction, i.e. one database round trip. The target is in
CPU: tokenstore's CPU per token answer at most PostgreSQL's per \`pgbench
-S -M prepared\` transaction (the last column of the second table at or
above 1.0). The requests/s ratio to pgbench below is reported only.

Machine: $machine. Load generator, server and PostgreSQL share these cores
(and other engineers' builds may run meanwhile): compare ratios, not absolutes.

$table

CPU per answer in the same rounds (user + system time over the answers
counted): the server's, and its client's. PostgreSQL's is its whole
server (postmaster, backends, WAL writer; exited backends through the
postmaster), read before and after each pgbench run; tokenstore's is the
\`serve\` process plus PostgreSQL's for the cache misses during its run.
Unlike the rates, these leave out the time a core sat idle between
wake-ups, which a Go server with a few threads leaves more of than
PostgreSQL with a process per connection (2026-12-02: 7–10 % of the
machine idle under wrk, none under pgbench). The last column is the
target: at or above 1.0, serving a valid token costs the server no more
than one database round trip costs PostgreSQL.

$cputable

| measure | value |
| --- | --- |
$extra
<!-- hack/bench/run.sh: end -->
DOC
)
write_doc_section run.sh "$section"
