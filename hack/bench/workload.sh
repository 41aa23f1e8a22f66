#!/usr/bin/env bash
# Workload-path benchmark against the token hot path, in one run, on one
# real `tokenstore serve` process with WATCH_NAMESPACE set against a real
# kube-apiserver (envtest binaries) and PostgreSQL on this machine:
#
#   hot path   GET /api/v1.0/alpha/token with a session cookie, as
#              hack/bench/run.sh measures it: C keep-alive connections from
#              wrk (LOADGEN=go: hack/bench/loadgen) in its own process,
#              PEOPLE people (each with its own session and credential)
#              calling in a loop;
#   delegated  POST /api/oauth2/token, RFC 8693 token exchange with a real
#              ServiceAccount token (TokenRequest API, audience
#              WORKLOAD_AUDIENCE) for a person's token under their grant
#              (requested_subject): the same PEOPLE people, each with a
#              grant to the ServiceAccount made through the API, each
#              person's form with a ServiceAccount token of its own;
#   service    the same tokens asking for the service (client-credentials)
#              token of a second TokenProvider that lists the ServiceAccount
#              (SERVICE=0 leaves it out).
#
# The three alternate ROUNDS times; each round gives the ratio workload
# req/s ÷ hot path req/s (target >= 0.8), and the medians are what counts.
# serve checks the tokens with real TokenReviews (a user bound to the
# generated ClusterRole config/rbac/role.yaml only); their verdicts are
# cached (kubeauth: a minute), as in production: the API server's own
# request counter shows how many it answered.
#
# Everything runs on loopback; the database it creates is dropped and the
# control plane stopped at the end.
#
#   hack/bench/workload.sh                   # prints the table, updates docs/performance.md
#   ROUNDS=5 DURATION=10 WRITE_DOCS=0 hack/bench/workload.sh
#   PROFILE=12 hack/bench/workload.sh        # also perf-record serve for 12 s under the delegated load
#   TOKENSTORE_BIN=/tmp/ts WRITE_DOCS=0 hack/bench/workload.sh   # measure a prebuilt binary
#   LOADGEN=go hack/bench/workload.sh        # load from the Go loadgen instead of wrk
#
# wrk (C, 2 threads) is the default load generator, as in run.sh: the Go
# loadgen takes a larger share of the two shared cores itself, more for the
# exchange's POSTs (a ServiceAccount token in every body) than for the hot
# path's GETs, so it measures the load generator along with the server.
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-32}
PEOPLE=${PEOPLE:-$CLIENTS}
CREDENTIALS=${CREDENTIALS:-2000}
SERVICE=${SERVICE:-1}
PORT=${PORT:-18100}
WRITE_DOCS=${WRITE_DOCS:-1}
PROFILE=${PROFILE:-0}
LOADGEN=${LOADGEN:-wrk}
NAMESPACE=tokenstore-bench
KUBE_VERSION=v1.35.8
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres

(( DURATION >= 1 && DURATION <= 60 )) || { echo "DURATION must be 1..60 seconds" >&2; exit 1; }
(( ROUNDS >= 1 && ROUNDS <= 9 )) || { echo "ROUNDS must be 1..9" >&2; exit 1; }
(( PEOPLE >= 1 && PEOPLE <= 1000 && PEOPLE <= CREDENTIALS )) || { echo "PEOPLE must be 1..1000 and at most CREDENTIALS" >&2; exit 1; }
case $LOADGEN in
  wrk) need_wrk ", or LOADGEN=go" ;;
  go) ;;
  *) echo "LOADGEN must be wrk or go" >&2; exit 1 ;;
esac

# The envtest binaries: KUBEBUILDER_ASSETS, else bin/k8s/<version>; while
# someone else builds them (hack/build-envtest.sh running), wait for that
# build rather than start a second one.
have_assets() { [[ -x "$1/etcd" && -x "$1/kube-apiserver" && -x "$1/kubectl" ]]; }
if [[ -z "${KUBEBUILDER_ASSETS:-}" ]]; then
  for _ in $(seq 1 60); do
    have_assets "bin/k8s/$KUBE_VERSION" && break
    pgrep -f build-envtest >/dev/null || break
    log "hack/build-envtest.sh is running elsewhere; waiting 30 s for bin/k8s/$KUBE_VERSION"
    sleep 30
  done
  KUBEBUILDER_ASSETS="$(hack/build-envtest.sh | tail -n1)"
fi
have_assets "$KUBEBUILDER_ASSETS" || { echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks etcd, kube-apiserver or kubectl" >&2; exit 1; }
KUBEBUILDER_ASSETS=$(cd "$KUBEBUILDER_ASSETS" && pwd)
export KUBEBUILDER_ASSETS
hack/ensure-postgres.sh

work=$(mktemp -d)
DB=bench_workload_$$_$(date +%s)
pids=()
cleanup() {
  # The kube fixture last-but-one: serve first, so it does not log the
  # API server going away.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true; done
  psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

log "building tokenstore, fixture, kube fixture and loadgen"
if [[ -n "${TOKENSTORE_BIN:-}" ]]; then
  cp "$TOKENSTORE_BIN" "$work/tokenstore"   # a prebuilt serve, for A/B runs of a change
else
  CGO_ENABLED=0 go build -trimpath -o "$work/tokenstore" ./cmd/tokenstore
fi
go build -o "$work/fixture" ./hack/bench/fixture
go build -o "$work/kube" ./hack/bench/kube
go build -o "$work/loadgen" ./hack/bench/loadgen
psql -qX -d postgres -c "CREATE DATABASE $DB" >/dev/null

# wait_file FILE PID WHAT: waits up to 10 minutes for FILE while PID lives.
wait_file() {
  for _ in $(seq 1 1200); do
    [[ -f "$1" ]] && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 stopped:" >&2; tail -n 30 "$work/$3.log" >&2; return 1; }
    sleep 0.5
  done
  echo "$3 not ready after 10 minutes" >&2; return 1
}

log "fixture: token provider OP, $CREDENTIALS credentials, $PEOPLE sessions"
"$work/fixture" -db "postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" -dir "$work" \
  -credentials "$CREDENTIALS" -sessions "$PEOPLE" -listen "127.0.0.1:$PORT" -lifetime 30m >"$work/fixture.log" 2>&1 &
pids+=($!)
wait_file "$work/ready" "${pids[-1]}" fixture

log "kube-apiserver (envtest, $KUBEBUILDER_ASSETS): TokenProviders, RBAC, ServiceAccount tokens"
"$work/kube" -assets "$KUBEBUILDER_ASSETS" -dir "$work" -root . -namespace "$NAMESPACE" \
  -tokens "$PEOPLE" -lifetime 30m >"$work/kube.log" 2>&1 &
pids+=($!)
wait_file "$work/kube-ready" "${pids[-1]}" kube
kubectl_admin() { "$KUBEBUILDER_ASSETS/kubectl" --kubeconfig "$work/kubeconfig.admin" "$@"; }

log "starting tokenstore serve (WATCH_NAMESPACE=$NAMESPACE)"
( set -a; . "$work/env"; . "$work/env.kube"; set +a
  export TOKENSTORE_MIGRATE_ON_START=true
  exec "$work/tokenstore" serve ) >"$work/tokenstore.log" 2>&1 &
tpid=$!; pids+=("$tpid")
for _ in $(seq 1 6000); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null && break
  kill -0 "$tpid" 2>/dev/null || { tail -n 30 "$work/tokenstore.log" >&2; exit 1; }
  sleep 0.01
done
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" || { echo "serve not ready after 60 s" >&2; tail -n 30 "$work/tokenstore.log" >&2; exit 1; }
base="http://127.0.0.1:$PORT"

# Each of the PEOPLE people grants the ServiceAccount access to their alpha
# credential, through the API (which looks the ServiceAccount up in the
# cluster), with their session.
log "$PEOPLE grants to $NAMESPACE/bench-workload"
head -n "$PEOPLE" "$work/sessions" >"$work/sessions.hot"
while read -r c; do
  code=$(curl -s -o "$work/grant.out" -w '%{http_code}' -b "tokenstore_session=$c" -H "Origin: $base" \
    -H 'Content-Type: application/json' -d "{\"service_account\":\"$NAMESPACE/bench-workload\"}" "$base/api/v1.0/alpha/grants")
  [[ "$code" == 201 ]] || { echo "grant answered $code: $(cat "$work/grant.out")" >&2; exit 1; }
done <"$work/sessions.hot"

# One request of each kind proves the paths before measuring.
exchange() { head -n1 "$1" | tr -d '\n' | curl -s -o "$work/exchange.out" -w '%{http_code}' -H 'Content-Type: application/x-www-form-urlencoded' --data-binary @- "$base/api/oauth2/token"; }
code=$(curl -s -o /dev/null -w '%{http_code}' -b "tokenstore_session=$(head -n1 "$work/sessions")" "$base/api/v1.0/alpha/token")
[[ "$code" == 200 ]] || { echo "token request answered $code" >&2; tail -n 20 "$work/tokenstore.log" >&2; exit 1; }
code=$(exchange "$work/forms.delegated")
[[ "$code" == 200 ]] || { echo "delegated token exchange answered $code: $(sed 's/"access_token":"[^"]*"/"access_token":"…"/' "$work/exchange.out")" >&2; exit 1; }
if [[ "$SERVICE" == 1 ]]; then
  code=$(exchange "$work/forms.service")
  [[ "$code" == 200 ]] || { echo "service token exchange answered $code: $(sed 's/"access_token":"[^"]*"/"access_token":"…"/' "$work/exchange.out")" >&2; exit 1; }
fi
rm -f "$work/exchange.out"

# TokenReviews the API server answered (all of them come from serve).
reviews() {
  kubectl_admin get --raw /metrics | awk '/^apiserver_request_total\{/ && /resource="tokenreviews"/ && /verb="POST"/ {n += $NF} END {printf "%d\n", n}'
}
grant_uses() { psql -qXtA -d "$DB" -c "SELECT count(*) FROM audit_events WHERE action = 'grant.use'"; }
reviews0=$(reviews); uses0=$(grant_uses)

# load NAME FILE MODE [WARMUP]: C connections for DURATION, each request the
# next line of FILE: in mode cookie a GET of the token with the line as
# session, in mode form a POST of the line to the token-exchange endpoint;
# WARMUP=1 first sends the same load for 1 s, not counted. Fails on any
# error answer; prints one JSON line (rps, p50_ms, p99_ms, requests).
load() {
  local name=$1 file=$2 mode=$3 warm=${4:-0} res path=/api/oauth2/token rps p50 p99 errs n
  [[ $mode == cookie ]] && path=/api/v1.0/alpha/token
  if [[ $LOADGEN == go ]]; then
    local args=(-post "$file")
    [[ $mode == cookie ]] && args=(-sessions "$file")
    (( warm )) && args+=(-warmup 1s)
    res=$("$work/loadgen" -url "$base" -c "$CLIENTS" -d "${DURATION}s" "${args[@]}") || { echo "loadgen ($name) failed: $res" >&2; return 1; }
    if grep -q '"errors"' <<<"$res"; then echo "loadgen ($name) errors: $res" >&2; tail -n 5 "$work/tokenstore.log" >&2; return 1; fi
    echo "$res"
    return
  fi
  if (( warm )); then
    read -r _ _ _ errs _ < <(run_wrk "$base" "$file" "$mode" "$path" 1) || { echo "wrk ($name) failed" >&2; return 1; }
    (( errs == 0 )) || { echo "wrk ($name): $errs failed requests in the warm-up" >&2; tail -n 5 "$work/tokenstore.log" >&2; return 1; }
  fi
  read -r rps p50 p99 errs n < <(run_wrk "$base" "$file" "$mode" "$path" "$DURATION") || { echo "wrk ($name) failed" >&2; return 1; }
  (( errs == 0 )) || { echo "wrk ($name): $errs failed requests" >&2; tail -n 5 "$work/tokenstore.log" >&2; return 1; }
  printf '{"rps":%s,"p50_ms":%s,"p99_ms":%s,"requests":%s}\n' "$rps" "$p50" "$p99" "$n"
}
declare -a H_RPS H_P50 H_P99 D_RPS D_P50 D_P99 D_RATIO S_RPS S_P50 S_P99 S_RATIO
delegated_served=0
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: hot path, GET token with session cookie, -c $CLIENTS -d ${DURATION}s, $PEOPLE people"
  res=$(load hot "$work/sessions.hot" cookie)
  H_RPS+=("$(json rps "$res")"); H_P50+=("$(json p50_ms "$res")"); H_P99+=("$(json p99_ms "$res")")
  log "round $r/$ROUNDS: token exchange, delegated (grant), -c $CLIENTS -d ${DURATION}s"
  if (( PROFILE > 0 && r == 1 )) && command -v perf >/dev/null; then
    ( sleep 2; perf record -F 999 -g -o "$work/perf.data" -p "$tpid" -- sleep "$PROFILE" >/dev/null 2>&1 ) &
    ppid=$!
  fi
  res=$(load delegated "$work/forms.delegated" form 1)
  D_RPS+=("$(json rps "$res")"); D_P50+=("$(json p50_ms "$res")"); D_P99+=("$(json p99_ms "$res")")
  delegated_served=$(( delegated_served + $(json requests "$res") ))
  D_RATIO+=("$(awk -v a="${D_RPS[-1]}" -v b="${H_RPS[-1]}" 'BEGIN{printf "%.2f", a/b}')")
  if [[ -n "${ppid:-}" ]]; then
    wait "$ppid" || true; ppid=
    perf report -i "$work/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 60 >"$work/perf.flat" || true
    perf report -i "$work/perf.data" --children --sort symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 120 >"$work/perf.children" || true
    mkdir -p "${PROFILE_OUT:-/tmp/tokenstore-workload-profile}"
    cp "$work/perf.data" "$work/perf.flat" "$work/perf.children" "${PROFILE_OUT:-/tmp/tokenstore-workload-profile}/" 2>/dev/null || true
    cp "$work/tokenstore" "${PROFILE_OUT:-/tmp/tokenstore-workload-profile}/" 2>/dev/null || true
    log "perf profile in ${PROFILE_OUT:-/tmp/tokenstore-workload-profile}"
  fi
  if [[ "$SERVICE" == 1 ]]; then
    log "round $r/$ROUNDS: token exchange, service token, -c $CLIENTS -d ${DURATION}s"
    res=$(load service "$work/forms.service" form)
    S_RPS+=("$(json rps "$res")"); S_P50+=("$(json p50_ms "$res")"); S_P99+=("$(json p99_ms "$res")")
    S_RATIO+=("$(awk -v a="${S_RPS[-1]}" -v b="${H_RPS[-1]}" 'BEGIN{printf "%.2f", a/b}')")
  fi
done
sleep 0.5
reviews1=$(reviews); uses1=$(grant_uses)
n_reviews=$(( reviews1 - reviews0 )); n_uses=$(( uses1 - uses0 ))
hwm=$(awk '/VmHWM/{print $2}' "/proc/$tpid/status")

machine=$(machine_line "kube-apiserver $("$KUBEBUILDER_ASSETS/kube-apiserver" --version 2>/dev/null | awk '{print $2}'), $(psql -qXtA -d postgres -c 'SHOW server_version' | awk '{print "PostgreSQL " $1}')")

table=$(
  if [[ "$SERVICE" == 1 ]]; then
    echo "| round | hot path req/s | p50 ms | p99 ms | delegated exchange req/s | ratio | p50 ms | p99 ms | service exchange req/s | ratio | p50 ms | p99 ms |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  else
    echo "| round | hot path req/s | p50 ms | p99 ms | delegated exchange req/s | ratio | p50 ms | p99 ms |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  fi
  for i in "${!H_RPS[@]}"; do
    printf '| %d | %.0f | %s | %s | %.0f | %s | %s | %s |' $((i + 1)) "${H_RPS[$i]}" "${H_P50[$i]}" "${H_P99[$i]}" "${D_RPS[$i]}" "${D_RATIO[$i]}" "${D_P50[$i]}" "${D_P99[$i]}"
    [[ "$SERVICE" == 1 ]] && printf ' %.0f | %s | %s | %s |' "${S_RPS[$i]}" "${S_RATIO[$i]}" "${S_P50[$i]}" "${S_P99[$i]}"
    echo
  done
  printf '| **median** | %.0f | %s | %s | %.0f | **%s** | %s | %s |' "$(median "${H_RPS[@]}")" "$(median "${H_P50[@]}")" "$(median "${H_P99[@]}")" \
    "$(median "${D_RPS[@]}")" "$(median "${D_RATIO[@]}")" "$(median "${D_P50[@]}")" "$(median "${D_P99[@]}")"
  [[ "$SERVICE" == 1 ]] && printf ' %.0f | **%s** | %s | %s |' "$(median "${S_RPS[@]}")" "$(median "${S_RATIO[@]}")" "$(median "${S_P50[@]}")" "$(median "${S_P99[@]}")"
  echo
)
extra=$(
  printf '| TokenReviews the API server answered during the rounds | %d (%d ServiceAccount tokens in use; verdicts cached up to a minute) |\n' "$n_reviews" "$PEOPLE"
  printf '| `grant.use` audit events written during the rounds / delegated answers counted by the load generator | %d / %d (not counting its 1 s warm-ups) |\n' "$n_uses" "$delegated_served"
  printf '| peak RSS (VmHWM) of serve | %.1f MiB |\n' "$(awk -v k="$hwm" 'BEGIN{print k/1024}')"
)

echo
echo "machine: $machine"
echo "$table"
echo
echo "| measure | value |"
echo "| --- | --- |"
echo "$extra"

[[ "$WRITE_DOCS" == 1 ]] || exit 0
svc_text=""
[[ "$SERVICE" == 1 ]] && svc_text="
- service exchange: the same tokens asking for the service
  (client-credentials) token of a second TokenProvider (\`svc\`, same OP)
  whose \`spec.workloadAccess\` lists the ServiceAccount."
loadgen_text="\`wrk -t 2\` (a C client, as in \`hack/bench/run.sh\`)"
[[ $LOADGEN == go ]] && loadgen_text="\`hack/bench/loadgen\`"
section=$(cat <<DOC
<!-- hack/bench/workload.sh: begin (generated; re-run to replace) -->
## Workload token exchange against the hot path (\`hack/bench/workload.sh\`)

One real \`tokenstore serve\` process with \`WATCH_NAMESPACE\` set, its
TokenProviders read from a real kube-apiserver and etcd (envtest binaries
of hack/build-envtest.sh), as a user bound only to the generated ClusterRole
(config/rbac/role.yaml); PostgreSQL on 127.0.0.1, per-replica cache on.
Load from $loadgen_text in its own process, $CLIENTS keep-alive
connections, $DURATION s per round, alternating in each round:

- hot path: \`GET /api/v1.0/alpha/token\` with a session cookie, $PEOPLE
  people calling in a loop (as \`hack/bench/run.sh\` measures it);
- delegated exchange: \`POST /api/oauth2/token\` (RFC 8693) with a real
  ServiceAccount token from the TokenRequest API (audience \`tokenstore\`,
  one token per person, $PEOPLE in all) and \`requested_subject\` = one of the
  same $PEOPLE people, each of whom granted the ServiceAccount access through
  the API: the comparable path (a person's token, under a grant).$svc_text

serve checks the ServiceAccount tokens with real TokenReviews, whose
verdicts it caches (a minute). The ratio is the exchange's requests/s over
the hot path's in the same round; target >= 0.8 for the delegated one.
$CREDENTIALS credentials stored.

Machine: $machine. Load generator, server, API server and PostgreSQL share
these cores (and other engineers' builds may run meanwhile): compare ratios, not
absolutes.

$table

| measure | value |
| --- | --- |
$extra
<!-- hack/bench/workload.sh: end -->
DOC
)
# The first time, before the hot path's generated section: right after
# the "Workload token exchange" section it belongs to.
write_doc_section workload.sh "$section" run.sh
