#!/usr/bin/env bash
# Check the collection the way Galaxy and the users of a collection check it. Called by
# `make lint` with the tools of requirements-lint.txt installed in .venv:
#   ansible-lint (production profile) and antsibull-changelog lint on the working tree;
#   ansible-galaxy collection build of the files git knows (tracked, or new and not ignored);
#   ansible-test sanity on that tarball's content, unpacked as ansible_collections/netlb/
#   multiwan (a real directory, as ansible-test needs): what Galaxy and users test;
#   ansible-galaxy collection install + verify of the tarball; galaxy-importer.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.venv
LINT=$ROOT/.build/lint
COLLECTION=$LINT/tree/ansible_collections/netlb/multiwan

export PATH=$VENV/bin:$PATH
export ANSIBLE_NOCOLOR=1

step() { printf '\n=== %s\n' "$*"; }
version_of() { python -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$1"; }

cd "$ROOT"
# shellcheck source=scripts/collection-tree.sh
source "$ROOT/scripts/collection-tree.sh"
# ansible-test keeps its per-test virtualenvs under ~/.ansible/test: a HOME of our own
# keeps them (and the bootstrap script below) in the machine's cache of this repository,
# reused by the next run and by other clones (one sanity run at a time uses it).
TEST_HOME=$(netlb_cache)/lint/ansible-test-home
mkdir -p "$TEST_HOME"

step "ansible-lint $(version_of ansible-lint) (profile production, .ansible-lint)"
# ansible-lint installs this collection into ./.ansible and lints with that copy, unless
# ANSIBLE_COLLECTIONS_PATH is set (then into ~/.ansible); it also loads collections from
# ~/.ansible/collections, where a stale copy of this one may lie. So: no
# ANSIBLE_COLLECTIONS_PATH, and a HOME of its own.
mkdir -p "$ROOT/.build/ansible-lint-home"
env -u ANSIBLE_COLLECTIONS_PATH HOME="$ROOT/.build/ansible-lint-home" ansible-lint --nocolor
# Its copy replaces the link `make deps` made there (.ansible/collections/.../multiwan ->
# the working tree), through which the tests and playbooks load the collection: put the
# link back, or the next test run would load this moment's copy, not the code being edited.
rm -rf "$ROOT/.ansible/collections/ansible_collections/netlb/multiwan"
ln -sfn ../../../.. "$ROOT/.ansible/collections/ansible_collections/netlb/multiwan"

step "antsibull-changelog $(version_of antsibull-changelog) lint (changelogs/fragments)"
antsibull-changelog lint
echo "changelog fragments are valid"

step "ansible-galaxy collection build (galaxy.yml build_ignore)"
tarball=$(build_collection_tree "$LINT")

# Every Python version ansible-test supports that this machine has runs the compile and
# import tests (limited to tests/config.yml's python_requires for modules).
PYTHONS=$LINT/pythons
mkdir -p "$PYTHONS"
found=()
for version in $(python - <<'EOF'
import ansible_test, os, runpy
constants = runpy.run_path(os.path.join(os.path.dirname(ansible_test.__file__),
                                        "_util", "target", "common", "constants.py"))
print(" ".join(constants["REMOTE_ONLY_PYTHON_VERSIONS"] + constants["CONTROLLER_PYTHON_VERSIONS"]))
EOF
); do
  if interpreter=$(find_python "$version"); then
    ln -s "$interpreter" "$PYTHONS/python$version"
    found+=("$version")
  fi
done
echo "Python versions for compile/import: ${found[*]}"

offline_get_pip "$TEST_HOME"

step "ansible-test sanity (ansible-core $(version_of ansible-core))"
(cd "$COLLECTION" && HOME=$TEST_HOME PATH=$PYTHONS:$PATH flock "$TEST_HOME/.lock" ansible-test sanity --venv --color no)

step "ansible-galaxy collection install + verify"
(
  export ANSIBLE_COLLECTIONS_PATH=$LINT/installed
  ansible-galaxy collection install --offline --force -p "$LINT/installed" "$tarball"
  ansible-galaxy collection verify --offline -p "$LINT/installed" netlb.multiwan
  ansible-doc -t role netlb.multiwan.balancer >/dev/null
  echo "the installed collection documents the role netlb.multiwan.balancer"
)

step "galaxy-importer $(version_of galaxy-importer) (no docker, no ansible-test)"
rm -rf "$LINT/importer"
mkdir -p "$LINT/importer/home"
importer_log=$LINT/importer/import.log
# The importer's settings come from these variables, whatever an
# /etc/galaxy-importer/galaxy-importer.cfg on the machine says. Its ansible-lint installs
# the collection under ~/.ansible: a HOME of its own keeps that out of the real one. It
# writes importer_result.json into the current directory.
cd "$LINT/importer"
GALAXY_IMPORTER_RUN_ANSIBLE_TEST=false \
GALAXY_IMPORTER_LOCAL_IMAGE_DOCKER=false \
GALAXY_IMPORTER_RUN_ANSIBLE_DOC=true \
GALAXY_IMPORTER_RUN_ANSIBLE_LINT=true \
GALAXY_IMPORTER_CHECK_CHANGELOG=true \
GALAXY_IMPORTER_CHECK_REQUIRED_TAGS=true \
GALAXY_IMPORTER_TMP_ROOT_DIR=$LINT/importer \
GALAXY_IMPORTER_ANSIBLE_LOCAL_TMP=$LINT/importer/ansible-tmp \
HOME=$LINT/importer/home \
  python -m galaxy_importer.main "$tarball" >"$importer_log" 2>&1 || {
    grep -v '^    ' "$importer_log"; echo "galaxy-importer failed (log: $importer_log)"; exit 1; }
# Galaxy shows warnings to the users of the collection: treat them as failures, except
# the note that tests/sanity/ignore-*.txt exist (each entry there says why it is needed).
grep -E '^WARNING: Ignore files skip ansible-test sanity tests' "$importer_log" || true
if grep -E '^(WARNING|ERROR)' "$importer_log" | grep -v '^WARNING: Ignore files skip ansible-test sanity tests'; then
  echo "galaxy-importer reported the problems above (log: $importer_log)"
  exit 1
fi
grep -E '^(Importing with|Importer processing)' "$importer_log"

step "lint: all checks passed"
