#!/usr/bin/env bash
# Install what the tests, the lab and the demo need, and nothing when it is all there.
# Debian/Ubuntu, as root. Called by `make deps`.
set -euo pipefail

# Distribution packages: netlink tools, the BPF toolchain, traffic; podman, runc and
# mmdebstrap for the lab's systemd containers (image built from the apt mirror); QEMU and busybox for
# the VM lab (Debian's own kernel with VRF, for hosts whose kernel lacks it; the kernel
# package itself is only downloaded and unpacked under .build/vm by tests/lab/vmkernel.py; zstd
# unpacks the 6.12 one);
# sshd for the fleet test's guests (they run their own sshd; openssh-client for Ansible) and
# nc, the ssh ProxyCommand by which molecule reaches them in their netns.
APT_PACKAGES=(iproute2 kmod procps iputils-ping iperf3 clang llvm libbpf-dev bpftool
              qemu-system-x86 busybox-static e2fsprogs util-linux zstd
              podman runc mmdebstrap
              python3 python3-venv python3-pip make git
              openssh-server openssh-client netcat-openbsd)
# python3-pyroute2: the engine's commands on this machine's own python3, as the role installs
# it on a managed host (netlb-multiwan-status reads links, routes and rules over netlink).
APT_PACKAGES+=(python3-pyroute2)
# nftables: the mwan3-style method that `make bench` compares with.
APT_PACKAGES+=(nftables)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages ${missing[*]}; run as root (or install them yourself)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages only, no services: openssh-server is here for the lab guests' own sshd,
  # so it must not start (or stay enabled) on this machine. policy-rc.d stops
  # invoke-rc.d from starting what gets installed; ours goes again on exit.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# install-deps (netlb.multiwan): no service starts while it runs\nexit 101\n' \
      >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  available=()
  for pkg in "${missing[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
      available+=("$pkg")
    else
      # e.g. bpftool lives in linux-tools-* on older Ubuntu releases
      echo "install-deps: package $pkg is not available on this distribution; skipping" >&2
    fi
  done
  apt-get install -y -qq --no-install-recommends "${available[@]}" >/dev/null
  # systemd enables ssh.service on install even when policy-rc.d kept it stopped.
  if [[ " ${available[*]} " == *" openssh-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    echo "install-deps: openssh-server installed for the lab guests only; ssh.service left disabled"
  fi
fi
