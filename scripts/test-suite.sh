#!/usr/bin/env bash
# make test: every part of the suite, each timed by scripts/timed.sh, on two lanes so that
# both cores of a small machine work. After deps:
#   VM lane    the VM lab (Debian's kernel under QEMU emulation: about one core for a
#              quarter of an hour), then ansible-core minors of make compat;
#   main lane  ansible-doc, lint, the unit tests, host kernel and containers, molecule,
#              then ansible-core minors of make compat.
# The compat minors come from one queue (scripts/compat.sh, COMPAT_QUEUE): the lane free
# first takes the next one. Parts of one lane never share names, namespaces, cgroups or
# containers with the other's (each test lab is named after its test).
# A failing part does not stop the others: the table at the end names every part and
# every test that failed or timed out. The VM lane's output goes to .build/lanes/vm.log
# (`tail -f` it) and is printed when the lane ends. Exit status 0 only when all passed.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=$ROOT/.venv/bin/python
LANES=$ROOT/.build/lanes
timed() { bash scripts/timed.sh "$@"; }

timed --reset
timed "deps (apt, venv, VM kernel, container image)" make --no-print-directory deps || { timed --report; exit 1; }

rm -rf "$LANES"
mkdir -p "$LANES"
export NETLB_NO_SKIP=1  # a skipped test is a failed test (tests/conftest.py)
export COMPAT_QUEUE=$LANES/compat-queue COMPAT_SKIP_OWN=1
bash scripts/compat.sh --reset

vm_lane() {
  timed "integration: VM lab (Debian's kernel, QEMU)" \
    "$PY" -m pytest -q --durations=8 -m vm tests/integration
  timed "compat: ansible-core minors (VM lane)" bash scripts/compat.sh
}

main_lane() {
  timed "ansible-doc" make --no-print-directory lint-docs
  timed "lint" make --no-print-directory lint
  timed "unit tests" "$PY" -m pytest -q tests/unit
  timed "integration: host kernel and containers" \
    "$PY" -m pytest -q --durations=8 -m "not vm and not compat" tests/integration
  timed "molecule (podman scenario)" make --no-print-directory molecule
  timed "compat: ansible-core minors (main lane)" bash scripts/compat.sh
}

# The VM lane in a process group of its own: stopped with everything it started when this
# script is (a CI timeout, Ctrl-C); its tests remove their guests and labs on SIGTERM.
set -m
vm_lane >"$LANES/vm.log" 2>&1 &
vm_pid=$!
set +m
trap 'kill -TERM -- -$vm_pid 2>/dev/null; wait $vm_pid 2>/dev/null' EXIT
trap 'exit 130' INT TERM
echo "=== VM lane started in the background (log: $LANES/vm.log)"

main_lane

echo
echo "=== main lane done; waiting for the VM lane (log: $LANES/vm.log)"
wait "$vm_pid"
trap - EXIT
echo "=== VM lane's output"
cat "$LANES/vm.log"

bash scripts/compat.sh --report
timed --report
! grep -q "FAILED" "${NETLB_TIMES:-.build/test-times}"
