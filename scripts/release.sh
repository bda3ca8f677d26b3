#!/usr/bin/env bash
# make release VERSION=X.Y.Z: cut a release of what landed since the last one.
#   - needs a clean working tree on main and a fragment with a release_summary;
#   - sets galaxy.yml's version, folds changelogs/fragments into changelogs/changelog.yaml
#     and CHANGELOG.rst (antsibull-changelog release), builds the tarball into .build/release;
#   - prints the commit and tag commands: publishing (git push, ansible-galaxy collection
#     publish) stays a human's decision.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
version=${1:?usage: release.sh X.Y.Z}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "VERSION: '$version' is not X.Y.Z" >&2; exit 1; }
if [ -n "$(git status --porcelain)" ]; then
  echo "release: the working tree has uncommitted changes; commit or drop them first" >&2
  exit 1
fi
current=$(sed -n 's/^version: *//p' galaxy.yml)
if grep -q "^  $version:" changelogs/changelog.yaml; then
  echo "release: $version is already in changelogs/changelog.yaml" >&2
  exit 1
fi
if [ "$current" != "$version" ] && [ "$(printf '%s\n%s\n' "$current" "$version" | sort -V | tail -1)" != "$version" ]; then
  echo "release: $version is older than galaxy.yml's $current" >&2
  exit 1
fi
if ! grep -qs '^release_summary:' changelogs/fragments/*.yml; then
  echo "release: add a fragment with a release_summary (e.g. changelogs/fragments/v$version.yml)" >&2
  exit 1
fi
sed -i "s/^version: .*/version: $version/" galaxy.yml
antsibull-changelog release --version "$version"
antsibull-changelog lint
rm -rf .build/release
ansible-galaxy collection build --output-path .build/release .
echo
echo "release $version prepared: review 'git diff', then"
echo "  git commit -am 'Release $version' && git tag -a $version -m 'netlb.multiwan $version'"
