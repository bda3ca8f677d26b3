#!/usr/bin/env bash
# make compat: the collection with every ansible-core minor from meta/runtime.yml's
# requires_ansible up to the newest that pip installs here, each in its own venv under
# .build/compat/<minor> with the oldest Python of this machine that the minor supports:
#   ansible-test sanity on the built collection (that Python; `make lint` runs every
#   Python with the newest ansible-core), the unit tests, and one real role run in a
#   systemd container (check mode, apply, idempotence, absent: test_role_compat_containers).
# Prints a table of the results; fails if any minor failed. COMPAT_MINORS="2.15 2.19"
# limits the run to those minors.
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
mkdir -p "$COMPAT"
: >"$results"

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
  local venv=$COMPAT/$1/venv
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
    offline_get_pip "$COMPAT/$1/ansible-test-home"
    cd "$tree/tree/ansible_collections/netlb/multiwan" &&
      HOME=$COMPAT/$1/ansible-test-home ansible-test sanity --venv --python "$2" --color no
  )
}

failed=0
while read -r minor python; do
  [ -n "${COMPAT_MINORS:-}" ] && [[ " $COMPAT_MINORS " != *" $minor "* ]] && continue
  pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  venv=$COMPAT/$minor/venv
  mkdir -p "$COMPAT/$minor"
  echo "=== ansible-core $minor (Python $pyver)"
  part "$minor" venv venv_for "$minor" "$python" || { failed=1; continue; }
  echo "    $("$venv/bin/ansible" --version | head -1)"
  part "$minor" sanity sanity "$minor" "$pyver" "$venv" || failed=1
  export NETLB_TEST_CONTEXT="ansible-core $minor"
  part "$minor" unit env NETLB_NO_SKIP=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit || failed=1
  part "$minor" role env NETLB_NO_SKIP=1 NETLB_ANSIBLE_BIN_DIR="$venv/bin" ANSIBLE_COLLECTIONS_PATH="$ROOT/.build/collections" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -m compat tests/integration/test_role_compat_containers.py || failed=1
done <<<"$plan"

echo
echo "make compat, per ansible-core minor:"
awk -F'\t' '{ printf "  ansible-core %-5s %-7s %5d s  %s\n", $1, $2, $3, $4 }' "$results"
exit $failed
