# Sourced by lint-collection.sh and compat.sh: the collection as Galaxy and its users get
# it, and what ansible-test needs to test it offline.

# build_collection_tree DIR: `ansible-galaxy collection build` of the files git knows
# (tracked, or new and not ignored) into DIR/dist, unpacked under
# DIR/tree/ansible_collections/netlb/multiwan (a real directory, as ansible-test needs).
# Prints the tarball's path last.
build_collection_tree() {
  local dir=$1 collection=$1/tree/ansible_collections/netlb/multiwan
  rm -rf "$dir"
  mkdir -p "$dir/source" "$dir/dist" "$collection"
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' path; do [ -e "$ROOT/$path" ] && printf '%s\0' "$path"; done \
    | tar -C "$ROOT" --null --no-recursion -T - -cf - | tar -C "$dir/source" -xf -
  ansible-galaxy collection build --output-path "$dir/dist" "$dir/source" >&2
  local tarball
  tarball=$(ls "$dir"/dist/netlb-multiwan-*.tar.gz)
  tar -C "$collection" -xzf "$tarball"
  # Inside this repository's .build/, ansible-test would ask the outer git which files
  # exist (none: .build is ignored); a repository of its own makes it list every unpacked
  # file, but not ansible-test's own output.
  git -C "$collection" init -q
  echo "/tests/output/" >>"$collection/.git/info/exclude"
  echo "$tarball"
}

# offline_get_pip TEST_HOME: `ansible-test sanity --venv` bootstraps pip in each test's
# virtualenv with get-pip.py, downloaded from a host that only the package registries'
# network reaches; give the ansible-test first in PATH a stand-in that uses the pip
# bundled with Python instead.
offline_get_pip() {
  local home=$1 pip_version
  pip_version=$(python - <<'PY'
import ansible_test, os, re
source = open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")).read()
print(re.search(r"pip='([0-9.]+)'", source).group(1))
PY
)
  mkdir -p "$home/.ansible/test/cache"
  cp "$ROOT/scripts/ansible_test_get_pip.py" "$home/.ansible/test/cache/get_pip_${pip_version//./_}.py"
}

# find_python X.Y: the path of this machine's Python X.Y, or a failure. pyenv's shims of
# versions that are not selected do not run, so this names the interpreter itself.
find_python() {
  local version=$1 candidate found=""
  if command -v "python$version" >/dev/null && "python$version" -c '' 2>/dev/null; then
    found=$(command -v "python$version")
  elif command -v pyenv >/dev/null; then
    for candidate in "$(pyenv root)/versions/$version".*/bin/"python$version"; do
      [ -x "$candidate" ] && found=$candidate
    done
  fi
  [ -n "$found" ] && echo "$found"
}

# netlb_cache: where what pip and ansible-test install for the checks is kept across clones
# of this repository on this machine (NETLB_CACHE, else ~/.cache/netlb-multiwan).
netlb_cache() {
  echo "${NETLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netlb-multiwan}"
}
