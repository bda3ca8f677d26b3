#!/usr/bin/env bash
# The podman molecule scenario as a user of the collection runs it: from a directory that
# holds only the installed collection (built and installed from this checkout) and the
# scenario copied out of it. Needs the venv (molecule, ansible-core) first in PATH.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/netlb-molecule-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

image=$(python -m tests.lab.containers)
# crun refuses hybrid cgroup layouts (cgroup2 at /sys/fs/cgroup/unified).
runtime=""
if grep -q ' /sys/fs/cgroup/unified cgroup2 ' /proc/mounts; then runtime=runc; fi

ansible-galaxy collection build -f --output-path "$WORK" "$ROOT" >/dev/null
ANSIBLE_COLLECTIONS_PATH="$WORK/collections" ansible-galaxy collection install -p "$WORK/collections" "$WORK"/netlb-multiwan-*.tar.gz >/dev/null
installed="$WORK/collections/ansible_collections/netlb/multiwan"
mkdir -p "$WORK/project/molecule"
cp -r "$installed/extensions/molecule/podman" "$installed/extensions/molecule/shared" "$WORK/project/molecule/"

cd "$WORK/project"
echo "molecule test -s podman in $WORK/project (image $image${runtime:+, runtime $runtime})"
ANSIBLE_COLLECTIONS_PATH="$WORK/collections" MOLECULE_PODMAN_IMAGE="$image" MOLECULE_PODMAN_RUNTIME="$runtime" \
  NO_COLOR=1 ANSIBLE_FORCE_COLOR=0 molecule test -s podman
