# netlb.multiwan — developer entry points. Run as root on Debian/Ubuntu.
#   make test   install what is missing, then run unit and integration tests
#   make check  the contributor's loop (minutes): docs, unit tests, host-kernel tests
#   make compat every supported ansible-core minor: sanity, unit tests, a role run
#   make demo   install what is missing, then show the technique on a built-in lab
#   make lint   ansible-lint, ansible-test sanity, build/install, galaxy-importer, changelog
#   make molecule  molecule test of the role in a podman systemd container, from the installed collection
#   make molecule-vm  the same role in a VM lab guest (Debian's kernel under QEMU, VRF steering)
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
BUILD := $(ROOT)/.build
COLLECTIONS := $(BUILD)/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/netlb/multiwan
PYTHON ?= python3

export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_PYTHON_INTERPRETER := $(PY)
export ANSIBLE_NOCOLOR := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: all deps test check compat unit integration demo clean lint-docs lint molecule molecule-vm

all: test

$(BUILD)/apt.stamp: scripts/install-deps.sh
	@mkdir -p $(BUILD)
	@bash scripts/install-deps.sh
	@touch $@

# The venv is rebuilt when the requirement files change.
$(VENV)/.stamp: requirements.txt requirements-test.txt requirements-dev.txt requirements-lint.txt $(BUILD)/apt.stamp
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt -r requirements-lint.txt
	@touch $@

$(COLLECTION_LINK):
	@mkdir -p $(dir $@)
	@ln -sfn ../../../.. $@

# The VM lab's guest kernel (downloaded from apt, unpacked under .build/vm, never
# installed) and its Python image; prints the kernel and the accelerator in use.
$(BUILD)/vm.stamp: $(VENV)/.stamp tests/lab/vmkernel.py tests/lab/vm-initramfs-init.sh
	@$(PY) -m tests.lab.vm --info
	@$(PY) -m tests.lab.vm --kernel 6.12 --info
	@touch $@

# The systemd container image of the lab (mmdebstrap from the apt mirror, podman import;
# cached by podman under the digest of its recipe).
$(BUILD)/containers.stamp: $(VENV)/.stamp tests/lab/containers.py
	@$(PY) -m tests.lab.containers >/dev/null
	@touch $@

deps: $(BUILD)/apt.stamp $(VENV)/.stamp $(COLLECTION_LINK) $(BUILD)/vm.stamp $(BUILD)/containers.stamp

# make test: scripts/test-suite.sh runs every part (deps, ansible-doc, lint, unit tests,
# integration on this kernel and in containers, the VM lab, molecule, compat), each timed
# (scripts/timed.sh), on two lanes: the VM lab beside the rest, make compat's ansible-core
# minors shared by both. NETLB_NO_SKIP turns every skipped test into a failure: a run that silently skipped the
# kernel tests must not pass as green. The table at the end names every part and every
# test that failed or timed out (pytest.ini bounds every test).
test:
	@bash scripts/test-suite.sh

# The contributor's loop, a few minutes once `make deps` is done: the docs render, the unit
# tests, and the real-kernel tests that need neither a VM nor a container (the program
# attached in network namespaces with fwmark steering, its maps, the tracker, status).
CHECK_TIMED = NETLB_TIMES=$(BUILD)/check-times NETLB_SUITE="make check" bash scripts/timed.sh
check: $(VENV)/.stamp $(COLLECTION_LINK)
	@$(CHECK_TIMED) --reset
	@$(CHECK_TIMED) "ansible-doc" $(MAKE) --no-print-directory lint-docs
	@$(CHECK_TIMED) "unit tests" env NETLB_NO_SKIP=1 $(PY) -m pytest -q tests/unit
	@$(CHECK_TIMED) "integration: host kernel, namespaces" \
	  env NETLB_NO_SKIP=1 $(PY) -m pytest -q --durations=5 -m "hostkernel and not vm and not containers" tests/integration
	@$(CHECK_TIMED) --report

# Every ansible-core minor from meta/runtime.yml's requires_ansible up to the newest that
# installs here, each in its own venv: ansible-test sanity, the unit tests and a real role
# run in a systemd container (scripts/compat.sh). COMPAT_MINORS="2.15 2.19": only those.
compat: $(VENV)/.stamp $(COLLECTION_LINK) $(BUILD)/containers.stamp
	@bash scripts/compat.sh

# The role's molecule scenarios, the full sequence including check, idempotence and a
# verify that measures traffic. `molecule`: extensions/molecule/podman run as a user
# runs it (the installed collection and the scenario, nothing of tests/); `molecule-vm`:
# extensions/molecule/default, a VM lab guest with VRF steering (slow under TCG).
molecule: deps
	PATH=$(VENV)/bin:$$PATH bash scripts/molecule-podman.sh

molecule-vm: deps
	PATH=$(VENV)/bin:$$PATH NO_COLOR=1 ANSIBLE_FORCE_COLOR=0 molecule test -s default

unit: deps
	$(PY) -m pytest -q tests/unit

integration: deps
	NETLB_NO_SKIP=1 $(PY) -m pytest -q -m "not compat" tests/integration

# Every module's and the role's documentation must render.
lint-docs: $(VENV)/.stamp $(COLLECTION_LINK)
	@for m in plugins/modules/*.py; do \
	  name=$$(basename $$m .py); \
	  $(VENV)/bin/ansible-doc netlb.multiwan.$$name >/dev/null || { echo "ansible-doc fails for $$name"; exit 1; }; \
	done; echo "ansible-doc renders every module"
	@for r in roles/*/; do \
	  name=$$(basename $$r); \
	  $(VENV)/bin/ansible-doc -t role netlb.multiwan.$$name >/dev/null || { echo "ansible-doc -t role fails for $$name"; exit 1; }; \
	  $(VENV)/bin/ansible-doc -t role --json netlb.multiwan.$$name | $(PY) -c 'import json, sys; \
	    role = json.load(sys.stdin)["netlb.multiwan." + sys.argv[1]]; \
	    sys.exit(0 if role["entry_points"]["main"].get("options") else "no options in the main entry point")' $$name \
	    || { echo "ansible-doc -t role shows no argument specs for $$name"; exit 1; }; \
	done; echo "ansible-doc renders every role's argument specs"

# What Galaxy and collection users run: see scripts/lint-collection.sh.
lint: deps
	@bash scripts/lint-collection.sh

demo: deps
	$(PY) -m tests.lab.demo

clean:
	rm -rf $(BUILD) .pytest_cache

# Cut a release of what landed since the last one (scripts/release.sh): galaxy.yml's version,
# the changelog from the fragments, the tarball in .build/release. Committing, tagging and
# publishing stay with the releaser.
.PHONY: release
release: $(VENV)/.stamp
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=X.Y.Z"; exit 1; }
	@PATH=$(VENV)/bin:$$PATH bash scripts/release.sh $(VERSION)

# Benchmarks, not part of `make test`: every balancing method in turn on the same labs
# (<15 min), written to benchmarks/results/latest.{md,png}. BENCH_ARGS=--quick: a short trial.
.PHONY: bench
$(VENV)/.bench-stamp: requirements-bench.txt $(VENV)/.stamp
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	@touch $@

# Then the provisioning part (benchmarks/fleet.py): site.yml's no-change run over SSH, one
# host and six (not with --only-*; one no-change run each with --quick).
bench: deps $(VENV)/.bench-stamp
	$(PY) -m benchmarks $(BENCH_ARGS)
	$(if $(findstring --only,$(BENCH_ARGS)),,$(PY) -m benchmarks.fleet $(if $(findstring --quick,$(BENCH_ARGS)),--reps 1,))
