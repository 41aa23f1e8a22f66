# Helpers the bench scripts (run.sh, refresh.sh, workload.sh) source; they
# run from the repository root and keep their scratch files in $work.

log() { echo ">> $*" >&2; }

# json KEY LINE: the number KEY holds in LINE, a one-line JSON object.
json() { sed -E 's/.*"'"$1"'":([0-9.]+).*/\1/' <<<"$2"; }

# median VALUES...: the middle value, or the mean of the two middle ones.
# Values that are not numbers ("-": not measured) are left out; "-" if
# none is.
median() { printf '%s\n' "$@" | sort -g | awk '$1 ~ /^-?[0-9.]+$/ {a[++n]=$1} END{ if (!n) print "-"; else if (n%2) print a[(n+1)/2]; else printf "%.2f\n", (a[n/2]+a[n/2+1])/2 }'; }

# hz: the kernel's clock ticks a second, the unit of cpu and timed.
hz=$(getconf CLK_TCK)

# cpu PID...: user+system ticks of the processes (0 for any gone).
cpu() { local t=0 p v; for p in "$@"; do v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) && t=$((t + v)); done; echo "$t"; }

# timed CMD...: runs CMD (a command or a function) in a subshell, sets OUT
# to its output (stdout and stderr) and CT to the CPU ticks of the
# processes it ran: `times`' last line, the children's user and system
# time ("XmY.YYYs XmZ.ZZZs").
timed() {
  local o
  o=$( (set +e; "$@"; times) 2>&1)
  OUT=$(head -n -2 <<<"$o")
  CT=$(tail -n1 <<<"$o" | awk -v hz="$hz" '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] }; printf "%d", n * hz }')
}

# pg_server_ticks: every tick the machine's PostgreSQL server has spent:
# its postmaster and each process it has forked (backends, WAL writer,
# checkpointer, ...), and the backends that have exited since (the
# postmaster reaps them, so their time is in its cutime and cstime). The
# difference over a run is the server's whole CPU for it. Needs
# $postmaster (pg_postmaster); 0 when it is empty.
pg_server_ticks() {
  local t p v
  [[ -n "$postmaster" ]] || { echo 0; return; }
  t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat")
  for p in $(pgrep -P "$postmaster"); do v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) && t=$((t + v)); done
  echo "$t"
}

# pg_children: how many processes the PostgreSQL server's postmaster
# has, counting backends that have exited but are not reaped yet (0
# without $postmaster).
pg_children() { if [[ -n "$postmaster" ]]; then pgrep -c -P "$postmaster" || true; else echo 0; fi; }

# pg_reaped COUNT: waits (up to 5 s) until the postmaster is back to COUNT
# children (pg_children before a run): the backends the run opened have
# exited and been reaped, so their CPU is in pg_server_ticks. Read at
# once after pgbench, a round missed about a third of its backends' time.
# Watching /proc costs PostgreSQL nothing, unlike asking it.
pg_reaped() {
  local i
  for i in $(seq 1 100); do
    (( $(pg_children) <= $1 )) && return 0
    sleep 0.05
  done
  # Not silently: a backend still unreaped leaves its CPU out of this
  # round's PostgreSQL figure, which then reads cheaper than it was.
  log "PostgreSQL still has $(pg_children) processes 5 s after the run, $1 before: this round's PostgreSQL CPU may be short"
}

# pg_postmaster [optional]: sets postmaster to the pid of the PostgreSQL
# server on 127.0.0.1:5432 (from its data directory's postmaster.pid).
# When that cannot be read, stops saying what it needs; with optional,
# says so, sets postmaster empty and goes on.
pg_postmaster() {
  local pgdata msg
  pgdata=$(psql -qXAt -d postgres -c "SHOW data_directory")
  if postmaster=$(head -n1 "$pgdata/postmaster.pid" 2>/dev/null) && [[ -r "/proc/$postmaster/stat" ]]; then return 0; fi
  postmaster=
  msg="reading the PostgreSQL server's pid and CPU needs $pgdata/postmaster.pid (run as root or as postgres)"
  [[ "${1:-}" == optional ]] || { echo "$msg" >&2; exit 1; }
  log "$msg; its CPU columns stay empty"
}

# per COUNT TICKS [us]: CPU per item, in milliseconds (two decimals) or,
# with us, microseconds (one); "-" for no items.
per() {
  local scale=1000 format=%.2f
  if [[ "${3:-}" == us ]]; then scale=1000000 format=%.1f; fi
  awk -v n="$1" -v t="$2" -v hz="$hz" -v s="$scale" -v f="$format" 'BEGIN { if (n > 0) printf f, t * s / hz / n; else print "-" }'
}

# machine_line PARTS...: cores, CPU model, memory, Go version, PARTS (each
# one more ", "-separated item) and today's date, for the docs.
machine_line() {
  local cpu out p
  cpu=$(sed -nE 's/^model name\s*:\s*//p' /proc/cpuinfo | head -n1)
  out="$(nproc) cores ($cpu), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go env GOVERSION)"
  for p in "$@"; do out+=", $p"; done
  echo "$out, $(date -u +%Y-%m-%d)"
}

# write_doc_section SCRIPT SECTION [BEFORE]: puts SECTION (which carries
# its own "<!-- hack/bench/SCRIPT: begin" and "end -->" markers) into
# docs/performance.md in place of the one SCRIPT wrote before; the first
# time, before BEFORE's section (another script's name) if there is one,
# else at the end.
write_doc_section() {
  local begin="<!-- hack/bench/$1: begin" end="<!-- hack/bench/$1: end -->" section=$2 before=${3:-} doc=docs/performance.md
  if grep -qF "$begin" "$doc"; then
    awk -v s="$section" -v b="$begin" -v e="$end" '
      index($0, b) {print s; skip=1; next}
      index($0, e) {skip=0; next}
      !skip {print}' "$doc" >"$work/doc"
  else
    awk -v s="$section" -v f="${before:+<!-- hack/bench/$before: begin}" '
      f != "" && index($0, f) && !done {print s; print ""; done=1}
      {print}
      END {if (!done) {print ""; print s}}' "$doc" >"$work/doc"
  fi
  cat "$work/doc" >"$doc"
  log "wrote the figures into $doc"
}

# need_wrk [HINT]: sets WRK to wrk's path, or stops with how to install it
# (HINT appended to the message).
need_wrk() {
  WRK=$(command -v wrk || true)
  [[ -x "$WRK" ]] || { echo "wrk not found: apt-get install wrk (Debian's package)${1:-}" >&2; exit 1; }
}

# wrk_lines: writes $work/lines.lua, the wrk script run_wrk uses. Each of
# wrk's threads reads FILE and sends every request as the next line of it
# (threads start at different lines), formatted once: in mode cookie a GET
# of PATH with the line as the session cookie, in mode form a POST of the
# line as a form body to PATH. With a fourth argument, the number of
# threads T, thread t takes only lines t, t+T, t+2T, ...: no two threads
# send one line's request.
wrk_lines() {
  cat >"$work/lines.lua" <<'LUA'
local reqs = {}
local i = 0
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("id", threads)
end
init = function(args)
  local n, of = 0, tonumber(args[4])
  for line in io.lines(args[1]) do
    n = n + 1
    if #line > 0 and (of == nil or (n - 1) % of == (id or 1) - 1) then
      if args[2] == "cookie" then
        reqs[#reqs + 1] = wrk.format("GET", args[3], { Cookie = "tokenstore_session=" .. line })
      else
        reqs[#reqs + 1] = wrk.format("POST", args[3], { ["Content-Type"] = "application/x-www-form-urlencoded" }, line)
      end
    end
  end
  if of == nil then i = ((id or 1) * 7) % #reqs end
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
LUA
}

# run_wrk URL FILE MODE PATH SECONDS [own]: wrk -t 2 -c $CLIENTS against URL
# with the lines of FILE (see wrk_lines; own: each thread its own lines);
# prints "RPS P50MS P99MS ERRORS REQUESTS", ERRORS counting non-2xx answers
# and socket errors.
run_wrk() {
  local out threads=2
  [[ -f "$work/lines.lua" ]] || wrk_lines
  out=$("${WRK:-wrk}" -t "$threads" -c "$CLIENTS" -d "${5}s" --latency -s "$work/lines.lua" "$1" -- "$2" "$3" "$4" ${6:+$threads} 2>&1)
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { n = $1 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    END { if (rps == "") exit 1; printf "%s %.3f %.3f %d %d\n", rps, p50, p99, err, n }' <<<"$out" || { echo "$out" >&2; return 1; }
}
