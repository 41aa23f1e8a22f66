#!/usr/bin/env bash
# Refresh-path benchmark, in one run:
#
#   reference  the OP's own refresh rate: hack/bench/loadgen -op-refresh
#              sends refresh_token grants straight to the fixture's
#              in-process OpenID Provider (zitadel op), C connections, each
#              with its own refresh-token chains (rotated on every answer);
#   measured   GET /api/v1.0/alpha/token?min_valid=86400 on a real
#              `tokenstore serve` process, C connections over PEOPLE
#              credentials holding real refresh tokens of that OP: no access
#              token is ever valid for a day, so every request refreshes
#              (a forced refresh would not do: force_refresh is satisfied by
#              a refresh of the last 2 s, by design). As in the reference,
#              connection w has credentials of its own (w, w+C, w+2C, ...):
#              no two connections ever ask for one credential at once, so
#              no request shares another's refresh (single flight) or
#              waits on its row lock.
#
# The ratio is tokenstore requests/s over the OP's refreshes/s; target
# >= 0.8. The refreshes tokenstore made are counted from its log
# ("credential refreshed") to show that every request did refresh. The
# CPU time each process used during a round, per request served, says
# where the time goes: the OP (fixture), tokenstore, the PostgreSQL
# backends of the benchmark's database, the load generator.
#
#   hack/bench/refresh.sh              # prints the table, updates docs/performance.md
#   ROUNDS=5 DURATION=10 WRITE_DOCS=0 hack/bench/refresh.sh
#   PROFILE=6 WRITE_DOCS=0 hack/bench/refresh.sh   # also perf-record the whole machine for 6 s of
#                                                   # round 1's tokenstore load (into PROFILE_OUT,
#                                                   # default /tmp/tokenstore-refresh-profile)
#   LAYOUT=split hack/bench/refresh.sh  # the provider on a core of its own (see below)
#
# LAYOUT=shared (the default) lets every process use both cores, so the
# provider's refreshes/s through tokenstore are bounded by the CPU
# tokenstore and PostgreSQL take from it: the ratio then measures the sum
# of everyone's CPU per refresh, not whether tokenstore keeps up with the
# provider. LAYOUT=split models a provider with CPUs of its own, as every
# real one has: the OP is pinned to core 0, and tokenstore, its PostgreSQL
# backends and the load generator to core 1 (taskset), in the reference
# and through tokenstore alike. The reference is then the OP's rate on its
# core, and the ratio says whether tokenstore, with as much CPU as the
# provider, serves as many refreshes as the provider can give. Each layout
# writes its own section of docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/bench/lib.sh

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-32}
PEOPLE=${PEOPLE:-256}
PORT=${PORT:-18090}
WRITE_DOCS=${WRITE_DOCS:-1}
PROFILE=${PROFILE:-0}
LAYOUT=${LAYOUT:-shared}
# The client of tokenstore's rounds (see tsload): wrk in the split layout,
# where its CPU is taken from tokenstore's core and none of it from the
# provider's; the Go load generator in the shared one, where the client's
# CPU competes with everyone's and the reference's client is that one.
if [[ "$LAYOUT" == split ]]; then CLIENT=${CLIENT:-wrk}; else CLIENT=${CLIENT:-loadgen}; fi
(( DURATION >= 1 && DURATION <= 60 )) || { echo "DURATION must be 1..60 seconds" >&2; exit 1; }
(( ROUNDS >= 1 && ROUNDS <= 9 )) || { echo "ROUNDS must be 1..9" >&2; exit 1; }
(( PEOPLE >= CLIENTS && PEOPLE <= 5000 )) || { echo "PEOPLE must be CLIENTS..5000" >&2; exit 1; }
# on_core CORE: the command prefix that runs a process on CORE in the split
# layout (nothing in the shared one).
case "$LAYOUT" in
  shared) on_core() { :; } ;;
  split)
    command -v taskset >/dev/null || { echo "LAYOUT=split needs taskset (util-linux)" >&2; exit 1; }
    (( $(nproc) >= 2 )) || { echo "LAYOUT=split needs 2 cores" >&2; exit 1; }
    on_core() { echo taskset -c "$1"; } ;;
  *) echo "LAYOUT must be shared or split" >&2; exit 1 ;;
esac
case "$CLIENT" in
  wrk) need_wrk " (or CLIENT=loadgen)" ;;
  loadgen) ;;
  *) echo "CLIENT must be wrk or loadgen" >&2; exit 1 ;;
esac
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
hack/ensure-postgres.sh

work=$(mktemp -d)
DB=bench_refresh_$$_$(date +%s)
pids=()
cleanup() {
  if (( ${pg_pinned:-0} )); then pg_pin "$pg_mask"; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

log "building tokenstore, fixture and loadgen"
CGO_ENABLED=0 go build -trimpath -o "$work/tokenstore" ./cmd/tokenstore
go build -o "$work/fixture" ./hack/bench/fixture
go build -o "$work/loadgen" ./hack/bench/loadgen
psql -qX -d postgres -c "CREATE DATABASE $DB" >/dev/null

log "fixture: OP, $PEOPLE credentials with real refresh tokens (+ $PEOPLE for the OP directly)"
$(on_core 0) "$work/fixture" -db "postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" -dir "$work" \
  -credentials "$CLIENTS" -sessions "$CLIENTS" -refresh-people "$PEOPLE" -listen "127.0.0.1:$PORT" -lifetime 30m >"$work/fixture.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 1200); do [[ -f "$work/ready" ]] && break; kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/fixture.log" >&2; exit 1; }; sleep 0.5; done
[[ -f "$work/ready" ]] || { echo "fixture not ready after 10 minutes" >&2; exit 1; }

( set -a; . "$work/env"; set +a; exec $(on_core 1) "$work/tokenstore" serve ) >"$work/tokenstore.log" 2>&1 &
tpid=$!; pids+=("$tpid")
for _ in $(seq 1 3000); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null && break
  kill -0 "$tpid" 2>/dev/null || { cat "$work/tokenstore.log" >&2; exit 1; }
  sleep 0.01
done
first=$(head -n1 "$work/sessions.refresh")
code=$(curl -s -o /dev/null -w '%{http_code}' -b "tokenstore_session=$first" "http://127.0.0.1:$PORT/api/v1.0/alpha/token?min_valid=86400")
[[ "$code" == 200 ]] || { echo "token request answered $code" >&2; tail -n 20 "$work/tokenstore.log" >&2; exit 1; }

# The load generator walks the session file from its own starting line per
# connection (line w*N/C of N); a file of C blocks, block w holding only
# the sessions of connection w's credentials in turn, keeps each connection
# on its own credentials for BLOCK requests a round.
BLOCK=$(( DURATION * 500 > 2000 ? DURATION * 500 : 2000 ))
awk -v c="$CLIENTS" -v b="$BLOCK" '{ s[NR - 1] = $0 }
  END { for (w = 0; w < c; w++) { k = 0; for (j = 0; j < b; j++) { p = w + c * k++; if (p >= NR) { k = 1; p = w }; print s[p] } } }' \
  "$work/sessions.refresh" >"$work/sessions.own"

fpid=${pids[0]}
# The backends serving the benchmark's database (tokenstore's pool).
pgpids() { psql -qXAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE datname = '$DB'"; }
# pg_pin CPUS: sets the affinity of the machine's PostgreSQL server, its
# postmaster and every process it has forked (backends, WAL writer,
# checkpointer, ...), to CPUS; backends forked later inherit it. In the
# split layout the server goes to core 1 for each tokenstore round: its
# work for tokenstore's transactions, commits and WAL included, is
# tokenstore's cost, not the provider's. It is put back on pg_mask (as it
# was) after the round and on exit. (Until 2026-12-02 a loop ran psql and a
# taskset per backend every second to pin new backends, on core 1 itself:
# 10-15 % of that core on a machine where starting a process is dear.)
if [[ "$LAYOUT" == split ]]; then
  pg_postmaster
  pg_mask=$(taskset -p "$postmaster" | awk '{print $NF}')
fi
pg_pin() {
  local p
  for p in "$postmaster" $(pgrep -P "$postmaster"); do taskset -p "$1" "$p" >/dev/null 2>&1 || true; done
}
pg_pinned=0
# loadgen ARGS...: runs it, sets LG (its JSON line) and LGCPU (its ticks).
loadgen() {
  timed $(on_core 1) "$work/loadgen" "$@"
  LG=$(grep '^{' <<<"$OUT" || true)
  LGCPU=$CT
}
# on_core1 CMD...: runs CMD (a shell function too) with this shell put on
# core 1 first in the split layout, so that what CMD starts runs there.
on_core1() {
  if [[ "$LAYOUT" == split ]]; then taskset -p -c 1 "$BASHPID" >/dev/null; fi
  "$@"
}
# tsload SECONDS: the load on tokenstore, every request a refresh; sets LG
# and LGCPU as loadgen does. CLIENT=wrk (the split layout's default): wrk
# -t 2, thread t over the people of lines t, t+2, ... of the session file,
# so a person's next request comes PEOPLE/2 requests of its thread later
# (about a third of a second, against a p99 of ~0.1 s; the refresh-count
# column would show a request that shared another's refresh). wrk, a C
# client, takes about 0.06 ms of CPU per request where the Go load
# generator takes 0.16 (2026-12-02), and in the split layout that CPU is
# taken from tokenstore's core. CLIENT=loadgen (the shared layout's): the
# Go load generator, each connection with credentials of its own (none
# ever shared, by construction).
tsload() {
  if [[ "$CLIENT" == loadgen ]]; then
    loadgen -url "http://127.0.0.1:$PORT" -sessions "$work/sessions.own" -query min_valid=86400 -c "$CLIENTS" -d "${1}s" -warmup 0
    return
  fi
  local rps p50 p99 errs n
  timed on_core1 run_wrk "http://127.0.0.1:$PORT" "$work/sessions.refresh" cookie "/api/v1.0/alpha/token?min_valid=86400" "$1" own
  read -r rps p50 p99 errs n <<<"$(head -n1 <<<"$OUT")"
  LG=
  if [[ "$rps" =~ ^[0-9.]+$ ]]; then
    LG="{\"rps\":$rps,\"p50_ms\":$p50,\"p99_ms\":$p99,\"ok\":$((n - errs))$( ((errs == 0)) || echo ",\"errors\":$errs")}"
  else
    echo "$OUT" >&2
  fi
  LGCPU=$CT
}

refreshed() { sleep 0.5; grep -c '"msg":"credential refreshed"' "$work/tokenstore.log" || true; }
# A first, unmeasured load opens tokenstore's pool and PostgreSQL's
# backends, which the first round would otherwise pay for.
log "warm-up: tokenstore, 3 s"
tsload 3
declare -a R_OP R_TS R_RATIO R_P50 R_P99 R_OP50 R_REF R_CPUOP R_CPUTS R_CPURATIO
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: OP directly, -c $CLIENTS -d ${DURATION}s"
  f0=$(cpu "$fpid")
  loadgen -url "http://127.0.0.1:$PORT" -op-refresh "$work/op_refresh.json" -c "$CLIENTS" -d "${DURATION}s" -warmup 0
  f1=$(cpu "$fpid")
  res=$LG
  [[ -n "$res" ]] || { echo "loadgen (OP) gave no result" >&2; exit 1; }
  if grep -q '"errors"' <<<"$res"; then log "loadgen errors (OP): $res"; fi
  R_OP+=("$(json rps "$res")"); R_OP50+=("$(json p50_ms "$res")")
  n=$(json ok "$res")
  R_CPUOP+=("$(per "$n" $((f1 - f0))) + $(per "$n" "$LGCPU")")
  c_op=$(awk -v n="$n" -v t=$((f1 - f0 + LGCPU)) 'BEGIN { print t / n }')
  log "round $r/$ROUNDS: tokenstore, every request a refresh, -c $CLIENTS -d ${DURATION}s"
  before=$(refreshed)
  mapfile -t pg < <(pgpids)
  f0=$(cpu "$fpid"); t0=$(cpu "$tpid"); p0=$(cpu "${pg[@]}")
  ppid=
  if (( PROFILE > 0 && r == 1 )) && command -v perf >/dev/null; then
    # System-wide, so that the OP, PostgreSQL and the load generator show
    # beside tokenstore.
    ( sleep 1; perf record -F 999 -a -g -o "$work/perf.data" -- sleep "$PROFILE" >/dev/null 2>&1 ) &
    ppid=$!
  fi
  if [[ "$LAYOUT" == split ]]; then pg_pinned=1; pg_pin 2; fi # mask 2: core 1
  tsload "$DURATION"
  if [[ "$LAYOUT" == split ]]; then pg_pin "$pg_mask"; pg_pinned=0; fi
  # Backends opened during the round count from zero.
  mapfile -t pg < <(pgpids)
  f1=$(cpu "$fpid"); t1=$(cpu "$tpid"); p1=$(cpu "${pg[@]}")
  res=$LG
  [[ -n "$res" ]] || { echo "loadgen (tokenstore) gave no result" >&2; exit 1; }
  if grep -q '"errors"' <<<"$res"; then log "loadgen errors (tokenstore): $res"; fi
  after=$(refreshed)
  if [[ -n "$ppid" ]]; then
    wait "$ppid" || true
    out=${PROFILE_OUT:-/tmp/tokenstore-refresh-profile}
    mkdir -p "$out"
    # Share of the samples by command, then each of tokenstore and
    # PostgreSQL by symbol, including callees (percentages of that command).
    perf report -i "$work/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 20 >"$out/perf.comm" || true
    perf report -i "$work/perf.data" --children --comm tokenstore --sort symbol --stdio -g none --percentage relative 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 150 >"$out/perf.tokenstore" || true
    perf report -i "$work/perf.data" --children --comm postgres --sort symbol --stdio -g none --percentage relative 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 100 >"$out/perf.postgres" || true
    cp "$work/perf.data" "$work/tokenstore" "$out/" 2>/dev/null || true
    log "perf profile in $out"
  fi
  n=$(json ok "$res")
  [[ "$CLIENT" == wrk ]] || (( n / CLIENTS < BLOCK / 2 )) || log "warning: about $((n / CLIENTS)) requests per connection; raise BLOCK ($BLOCK)"
  R_TS+=("$(json rps "$res")"); R_P50+=("$(json p50_ms "$res")"); R_P99+=("$(json p99_ms "$res")")
  R_REF+=("$((after - before)) / $n")
  # Fewer refreshes than answers: some request shared another's refresh
  # (single flight or the row lock), and requests/s overstate refreshes/s.
  (( after - before >= n )) || log "warning: round $r: $((after - before)) refreshes for $n requests; some shared a refresh (raise PEOPLE)"
  R_CPUTS+=("$(per "$n" $((f1 - f0))) + $(per "$n" $((t1 - t0))) + $(per "$n" $((p1 - p0))) + $(per "$n" "$LGCPU")")
  R_CPURATIO+=("$(awk -v n="$n" -v t=$((f1 - f0 + t1 - t0 + p1 - p0 + LGCPU)) -v o="$c_op" 'BEGIN { printf "%.2f", o / (t / n) }')")
  R_RATIO+=("$(awk -v a="${R_TS[-1]}" -v b="${R_OP[-1]}" 'BEGIN{printf "%.2f", a/b}')")
done
machine=$(machine_line)
table=$(
  echo "| round | OP refreshes/s (direct) | OP p50 ms | tokenstore req/s | ratio | p50 ms | p99 ms | refreshes logged / requests served |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  for i in "${!R_OP[@]}"; do
    printf '| %d | %.0f | %s | %.0f | %s | %s | %s | %s |\n' $((i + 1)) "${R_OP[$i]}" "${R_OP50[$i]}" "${R_TS[$i]}" "${R_RATIO[$i]}" "${R_P50[$i]}" "${R_P99[$i]}" "${R_REF[$i]}"
  done
  printf '| **median** | %.0f | %s | %.0f | **%s** | %s | %s | |\n' "$(median "${R_OP[@]}")" "$(median "${R_OP50[@]}")" "$(median "${R_TS[@]}")" "$(median "${R_RATIO[@]}")" "$(median "${R_P50[@]}")" "$(median "${R_P99[@]}")"
)
cputable=$(
  echo "| round | direct: OP + load generator | through tokenstore: OP + tokenstore + PostgreSQL + load generator | ratio of the sums |"
  echo "| --- | --- | --- | --- |"
  for i in "${!R_OP[@]}"; do
    printf '| %d | %s | %s | %s |\n' $((i + 1)) "${R_CPUOP[$i]}" "${R_CPUTS[$i]}" "${R_CPURATIO[$i]}"
  done
  printf '| **median** | | | **%s** |\n' "$(median "${R_CPURATIO[@]}")"
)
echo; echo "machine: $machine"; echo "$table"; echo; echo "CPU ms per request:"; echo "$cputable"
[[ "$WRITE_DOCS" == 1 ]] || exit 0
if [[ "$LAYOUT" == split ]]; then
  key="refresh.sh LAYOUT=split"
  title="Refresh path, the provider on a core of its own (\`LAYOUT=split hack/bench/refresh.sh\`)"
  cores="The OP runs on core 0 alone; tokenstore, the PostgreSQL backends of the
benchmark's database and the load generator on core 1 (\`taskset\`), in
the reference and through tokenstore alike, as if the provider had a
machine of its own the size of tokenstore's. The reference is then what
the provider can give on its core, and the ratio says whether tokenstore,
with as much CPU, keeps up with it. For each tokenstore round the whole
PostgreSQL server (postmaster, WAL writer, checkpointer, every backend)
is put on core 1 too: its work for tokenstore's commits is tokenstore's
cost. Anything else on the machine is not pinned."
  cpunote="In this layout requests/s follow the busier core: the OP's CPU per
request on core 0 against the sum of the other three on core 1, while
the last column sums all four as in the shared layout."
else
  key="refresh.sh"
  title="Refresh path against the provider (\`hack/bench/refresh.sh\`)"
  cores="Load generator, OP, server and PostgreSQL share these
cores (and other engineers' builds may run meanwhile): compare ratios, not
absolutes."
  cpunote="All of them
share the two cores, so when the cores are busy (as here) requests/s
follow CPU per request; the last column, direct CPU per request over
CPU per request through tokenstore, is the ratio the cores would give
with nothing else running, and moves much less from round to round than
the measured one, which follows the other engineers' load."
fi
if [[ "$CLIENT" == wrk ]]; then
  clientline="from \`wrk -t 2\`"
  ownline="Each of wrk's threads has credentials of its own
(half, taken in turn), so a person's next request comes $((PEOPLE / 2 - 1)) requests of
its thread later, long after the last has been answered: no request
shares another's refresh or waits on its row lock (the last column would
show it)."
else
  clientline="from \`hack/bench/loadgen\`"
  ownline="Each connection has credentials of its own
($((PEOPLE / CLIENTS)), taken in turn), so no request shares another's refresh
or waits on its row lock."
fi
section=$(cat <<DOC
<!-- hack/bench/$key: begin (generated; re-run to replace) -->
## $title

Every request needs a refresh: \`GET /api/v1.0/alpha/token?min_valid=86400\`
on a real \`tokenstore serve\` process, $CLIENTS keep-alive connections $clientline
over $PEOPLE credentials holding real refresh tokens of
the fixture's in-process OpenID Provider (zitadel \`op\`, which rotates refresh
tokens), $DURATION s per round, after a 3 s warm-up. $ownline No access token lives a day, so each request
refreshes (the last column counts the "credential refreshed" log lines);
\`force_refresh=true\` would not measure this, since a forced request is
satisfied by a refresh begun in the last 2 s (\`broker.DefaultForceWindow\`).
Reference in the same run, alternating with it: \`hack/bench/loadgen\`
sending \`refresh_token\` grants straight to the OP's token endpoint at the
same concurrency over sockets, each connection with refresh-token chains of
its own ($PEOPLE in all; no database). The ratio is tokenstore requests/s
over the OP's refreshes/s; target >= 0.8.

Machine: $machine. $cores

$table

CPU time per request served, in milliseconds, of each process during the
same rounds (from /proc; PostgreSQL: the backends connected to the
benchmark's database, so not the WAL writer or checkpointer). $cpunote

$cputable
<!-- hack/bench/$key: end -->
DOC
)
write_doc_section "$key" "$section"
