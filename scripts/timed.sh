#!/usr/bin/env bash
# make test's parts, timed: `timed.sh PART command...` runs the command and records
# how long it took in $NETLB_TIMES; `timed.sh --report` prints the table so far.
# A part that fails is recorded as such, with the tests that failed or timed out (the
# suite's conftest writes them to $NETLB_FAILED_TESTS), and the table is printed before
# make stops.
set -u
times=${NETLB_TIMES:-.build/test-times}
suite=${NETLB_SUITE:-make test}
report() {
    [ -s "$times" ] || return 0
    echo
    echo "$suite, per part:"
    awk -F'\t' '$1 == "" { printf "      %s\n", $3; next }
                { printf "  %-44s %6d s  %s\n", $1, $2, $3; total += $2 }
                END { printf "  %-44s %6d s  (%.1f min)\n", "total", total, total / 60 }' "$times"
}
if [ "${1:-}" = --report ]; then report; exit 0; fi
if [ "${1:-}" = --reset ]; then mkdir -p "$(dirname "$times")"; : > "$times"; exit 0; fi
part=$1; shift
failed_tests=$(mktemp "${TMPDIR:-/tmp}/netlb-failed-tests.XXXXXX")
trap 'rm -f "$failed_tests"' EXIT
start=$(date +%s)
echo "=== $part"
NETLB_FAILED_TESTS=$failed_tests "$@"
rc=$?
elapsed=$(( $(date +%s) - start ))
if [ $rc -eq 0 ]; then status=ok; else status="FAILED (exit $rc)"; fi
printf '%s\t%d\t%s\n' "$part" "$elapsed" "$status" >> "$times"
# One line per test that failed: its node id and whether it timed out.
sort -u "$failed_tests" | awk -F'\t' '{ printf "\t\t%s %s\n", $1, $2 }' >> "$times"
echo "=== $part: $status in ${elapsed} s"
if [ $rc -ne 0 ]; then report; fi
exit $rc
