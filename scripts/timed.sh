#!/usr/bin/env bash
# make test's parts, timed: `timed.sh PART command...` runs the command and records
# how long it took in $NETLB_TIMES; `timed.sh --report` prints the table so far.
# A part that fails is recorded as such, and the table is printed before make stops.
set -u
times=${NETLB_TIMES:-.build/test-times}
report() {
    [ -s "$times" ] || return 0
    echo
    echo "make test, per part:"
    awk -F'\t' '{ printf "  %-44s %6d s  %s\n", $1, $2, $3; total += $2 }
                END { printf "  %-44s %6d s  (%.1f min)\n", "total", total, total / 60 }' "$times"
}
if [ "${1:-}" = --report ]; then report; exit 0; fi
if [ "${1:-}" = --reset ]; then mkdir -p "$(dirname "$times")"; : > "$times"; exit 0; fi
part=$1; shift
start=$(date +%s)
echo "=== $part"
"$@"
rc=$?
elapsed=$(( $(date +%s) - start ))
if [ $rc -eq 0 ]; then status=ok; else status="FAILED (exit $rc)"; fi
printf '%s\t%d\t%s\n' "$part" "$elapsed" "$status" >> "$times"
echo "=== $part: $status in ${elapsed} s"
if [ $rc -ne 0 ]; then report; fi
exit $rc
