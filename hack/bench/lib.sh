# Helpers the bench scripts (run.sh, refresh.sh, workload.sh) source; they
# run from the repository root and keep their scratch files in $work.

log() { echo ">> $*" >&2; }

# json KEY LINE: the number KEY holds in LINE, a one-line JSON object.
json() { sed -E 's/.*"'"$1"'":([0-9.]+).*/\1/' <<<"$2"; }

# median VALUES...: the middle value, or the mean of the two middle ones.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

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
