#!/usr/bin/env bash
# make compat: the collection with every ansible-core minor from meta/runtime.yml's
# requires_ansible up to the newest that pip installs here, each in its own venv under
# .build/compat/<minor> with the oldest Python of this machine that the minor supports:
#   ansible-test sanity on the built collection (that Python; `make lint` runs every
#   Python with the newest ansible-core), the unit tests, and one real role run in a
#   systemd container (check mode, apply, idempotence, absent: test_role_compat_containers).
# Prints a table of the results; fails if any minor failed. COMPAT_MINORS="2.15 2.19"
# limits the run to those minors.
#
# make test runs it on both of its lanes (scripts/test-suite.sh): with COMPAT_QUEUE=DIR
# each run takes the minors no other run has claimed yet (mkdir DIR/MINOR), and adds its
# rows to the results without printing them (`compat.sh --reset` before, `--report`
# after). COMPAT_SKIP_OWN=1 leaves out the minor of the project's .venv: make lint runs
# its sanity (on every Python), the unit tests and test_role_containers its role run.
#
# ansible-test's per-test virtualenvs and each minor's venv are a cache of what pip
# installs, shared by every clone on this machine ($NETLB_CACHE/compat/MINOR, one run at
# a time per minor): a fresh clone does not build them again.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COMPAT=$ROOT/.build/compat
export ANSIBLE_NOCOLOR=1
cd "$ROOT"
# shellcheck source=scripts/collection-tree.sh
source "$ROOT/scripts/collection-tree.sh"

pythons=()
for version in 3.10 3.11 3.12 3.13 3.14; do
  if interpreter=$(find_python "$version"); then pythons+=("$interpreter"); fi
done
plan=$(python3 scripts/compat_plan.py meta/runtime.yml "${pythons[@]}") || exit 1
results=$COMPAT/results
report() {
  echo
  echo "make compat, per ansible-core minor:"
  awk -F'\t' '{ printf "  ansible-core %-5s %-7s %5s s  %s\n", $1, $2, $3, $4 }' "$results"
  ! grep -q FAILED "$results"
}
mkdir -p "$COMPAT"
case "${1:-}" in
  --reset) : >"$results"; exit 0 ;;
  --report) report; exit ;;
esac
[ -n "${COMPAT_QUEUE:-}" ] || : >"$results"
cache=$(netlb_cache)/compat
own_minor=$("$ROOT/.venv/bin/python" -c 'import ansible.release as r; print(".".join(r.__version__.split(".")[:2]))' 2>/dev/null)

# One part of one minor, timed; its output goes to .build/compat/<minor>/<part>.log.
part() {
  local minor=$1 name=$2 start rc; shift 2
  start=$(date +%s)
  "$@" >"$COMPAT/$minor/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%d\t%s\n' "$minor" "$name" "$(( $(date +%s) - start ))" \
    "$([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc, $COMPAT/$minor/$name.log)")" >>"$results"
  if [ $rc -ne 0 ]; then
    tail -30 "$COMPAT/$minor/$name.log"
    # make test's part table names what failed (pytest names its own tests there).
    if [ -n "${NETLB_FAILED_TESTS:-}" ] && [[ $name != unit && $name != role ]]; then
      printf 'ansible-core %s: %s\tfailed\n' "$minor" "$name" >>"$NETLB_FAILED_TESTS"
    fi
  fi
  return $rc
}

venv_for() {  # minor python: a venv with that ansible-core and what the tests import
  local venv=$cache/$1/venv
  if [ ! -x "$venv/bin/ansible-test" ] || ! "$venv/bin/python" -c 'import ansible.release as r, sys; sys.exit(not r.__version__.startswith(sys.argv[1] + "."))' "$1"; then
    rm -rf "$venv"
    "$2" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "ansible-core==$1.*" \
    -r requirements-test.txt
}

sanity() {  # minor python venv
  local tree=$COMPAT/$1/build
  (
    export PATH=$3/bin:$PATH
    build_collection_tree "$tree" >/dev/null
    offline_get_pip "$cache/$1/ansible-test-home"
    cd "$tree/tree/ansible_collections/netlb/multiwan" &&
      HOME=$cache/$1/ansible-test-home ansible-test sanity --venv --python "$2" --color no
  )
}

failed=0
while read -r minor python; do
  [ -n "${COMPAT_MINORS:-}" ] && [[ " $COMPAT_MINORS " != *" $minor "* ]] && continue
  if [ -n "${COMPAT_QUEUE:-}" ]; then
    mkdir -p "$COMPAT_QUEUE"
    mkdir "$COMPAT_QUEUE/$minor" 2>/dev/null || continue  # another lane has it
  fi
  if [ "${COMPAT_SKIP_OWN:-}" = 1 ] && [ "$minor" = "$own_minor" ]; then
    printf '%s\t%s\t%s\t%s\n' "$minor" "all" "-" "in make test's own parts (.venv: lint, unit, test_role_containers)" >>"$results"
    continue
  fi
  pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  venv=$cache/$minor/venv
  mkdir -p "$COMPAT/$minor" "$cache/$minor"
  echo "=== ansible-core $minor (Python $pyver)"
  # One run of a minor at a time on this machine (another clone's): its cached venvs and
  # its containers' names are shared.
  exec {lock}>"$cache/$minor/lock"
  flock "$lock"
  if part "$minor" venv venv_for "$minor" "$python"; then
    echo "    $("$venv/bin/ansible" --version | sed -n 1p)"
    part "$minor" sanity sanity "$minor" "$pyver" "$venv" || failed=1
    export NETLB_TEST_CONTEXT="ansible-core $minor"
    part "$minor" unit env NETLB_NO_SKIP=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit || failed=1
    part "$minor" role env NETLB_NO_SKIP=1 NETLB_ANSIBLE_BIN_DIR="$venv/bin" ANSIBLE_COLLECTIONS_PATH="$ROOT/.build/collections" \
      NETLB_COMPAT_MINOR="$minor" "$venv/bin/python" -m pytest -q -p no:cacheprovider -m compat \
      tests/integration/test_role_compat_containers.py || failed=1
  else
    failed=1
  fi
  exec {lock}>&-
done <<<"$plan"

[ -n "${COMPAT_QUEUE:-}" ] && exit $failed
report || failed=1
exit $failed
