#!/usr/bin/env bash
# make test's parts, timed: `timed.sh PART command...` runs the command and records
# how long it took in $NETLB_TIMES; `timed.sh --report` prints the table so far, with the
# time since `timed.sh --reset` (parts run side by side in make test's two lanes: the
# wall clock is less than the sum). A part that fails is recorded as such, with the
# tests that failed or timed out (the suite's conftest writes them to
# $NETLB_FAILED_TESTS), and the table is printed; exit status: the command's.
set -u
times=${NETLB_TIMES:-.build/test-times}
suite=${NETLB_SUITE:-make test}
report() {
    [ -s "$times" ] || return 0
    echo
    echo "$suite, per part:"
    awk -F'\t' '$1 == "" { printf "      %s\n", $3; next }
                { printf "  %-44s %6d s  %s\n", $1, $2, $3; total += $2 }
                END { printf "  %-44s %6d s  (%.1f min)\n", "sum of the parts", total, total / 60 }' "$times"
    if [ -s "$times.start" ]; then
        awk -v wall=$(( $(date +%s) - $(cat "$times.start") )) \
            'BEGIN { printf "  %-44s %6d s  (%.1f min)\n", "wall clock", wall, wall / 60 }'
    fi
}
if [ "${1:-}" = --report ]; then report; exit 0; fi
if [ "${1:-}" = --reset ]; then mkdir -p "$(dirname "$times")"; : > "$times"; date +%s > "$times.start"; exit 0; fi
part=$1; shift
failed_tests=$(mktemp "${TMPDIR:-/tmp}/netlb-failed-tests.XXXXXX")
trap 'rm -f "$failed_tests"' EXIT
start=$(date +%s)
echo "=== $part"
NETLB_FAILED_TESTS=$failed_tests "$@"
rc=$?
elapsed=$(( $(date +%s) - start ))
if [ $rc -eq 0 ]; then status=ok; else status="FAILED (exit $rc)"; fi
# The part's row, then one line per test that failed (its node id and whether it timed
# out), appended in one write: the other lane may be appending its own.
block=$( printf '%s\t%d\t%s\n' "$part" "$elapsed" "$status"
         sort -u "$failed_tests" | awk -F'\t' '{ printf "\t\t%s %s\n", $1, $2 }' )
printf '%s\n' "$block" >> "$times"
echo "=== $part: $status in ${elapsed} s"
if [ $rc -ne 0 ]; then report; fi
exit $rc
