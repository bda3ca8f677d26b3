#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: balancer_facts
short_description: What a host offers the netlb.multiwan balancer (kernel, systemd, udev, cgroup v2, bpffs, VRF)
version_added: "0.2.0"
description:
  - Reads, in one step, what the C(netlb.multiwan.balancer) role must know about a host before it
    changes anything, and returns it as the fact C(netlb_multiwan).
  - It replaces full fact gathering for the role, which took most of a no-change run's time on a
    slow host, and reads only C(/proc), C(/sys), C(/run) and C(/etc/os-release).
  - Needs neither pyroute2 nor bpftool, so it also runs before the role installs them.
  - Also returns the state document the role recorded on its last run (C(recorded)), which says
    what exists on the host, so a run can remove what the new plan lacks (an uplink taken out of
    the inventory, a changed steering) and keep what an operator changed at runtime (a drained
    uplink).
author:
  - netlb.multiwan contributors (@netlb)
options:
  state_file:
    description: The state document the role writes; read into C(recorded).
    type: path
    default: /etc/netlb-multiwan/balancer.json
  mptcp:
    description:
      - The MPTCP mode the role is about to apply (C(balancer_mptcp)); C(mptcp.problem) says why this host
        cannot have it. V(upgrade) loads the smallest C(fmod_ret) program on C(update_socket_protocol) and
        closes it at once (nothing stays loaded), the only way to learn whether the kernel runs it.
    type: str
    choices: ["off", paths, upgrade]
    default: "off"
  steering:
    description: The steering the role applies (C(balancer_steering)); MPTCP refuses C(vrf).
    type: str
    default: fwmark
  require:
    description:
      - Fail, naming the reason, when the host cannot run the balancer - a kernel older than 5.8 (the program's
        C(bpf_setsockopt) in connect hooks), no cgroup v2 file system mounted, or an O(mptcp) mode the host cannot
        have. The facts are returned all the same.
      - The role checks every host this way before it changes anything.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  facts:
    support: full
  check_mode:
    support: full
    details: It only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Linux only.
seealso:
  - module: netlb.multiwan.balancer_info
  - module: ansible.builtin.setup
"""

EXAMPLES = r"""
- name: Learn what the host offers
  netlb.multiwan.balancer_facts:

- name: Require VRF support
  ansible.builtin.assert:
    that: ansible_facts.netlb_multiwan.vrf.supported
    fail_msg: "{{ ansible_facts.netlb_multiwan.vrf.reason }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    netlb_multiwan:
      description: What the host offers the balancer.
      returned: always
      type: dict
      contains:
        kernel:
          description: The running kernel's release.
          type: str
          sample: 6.1.0-27-amd64
        systemd:
          description: >-
            Whether systemd runs as PID 1 (C(sd_booted()): C(/run/systemd/system) exists), so units
            can be started now, not only enabled for the next boot.
          type: bool
          sample: true
        udev:
          description: >-
            Whether udevd runs (its control socket exists). Without it (containers) systemd has no
            device units to bind an uplink's unit to.
          type: bool
          sample: true
        cgroup2:
          description: Mount point of the cgroup v2 file system, or null.
          type: str
          sample: /sys/fs/cgroup
        bpffs:
          description: Mount point of the BPF file system, or null.
          type: str
          sample: /sys/fs/bpf
        vrf:
          description: VRF support of the running kernel.
          type: dict
          contains:
            loaded:
              description: Whether the vrf driver is loaded or built in (C(/sys/module/vrf)).
              type: bool
            supported:
              description: Whether VRF devices can be created (loaded, built in, or an installed module that may load).
              type: bool
            reason:
              description: Why, in one sentence.
              type: str
          sample: {loaded: false, supported: true, reason: vrf driver available in modules.dep}
        os_family:
          description: >-
            The distribution family, named as the C(ansible_facts.os_family) of C(ansible.builtin.setup)
            for the families the role knows (C(Debian), C(RedHat), C(Suse), C(Archlinux), C(Alpine)),
            from C(/etc/os-release); null when unknown.
          type: str
          sample: Debian
        python:
          description: >-
            The Python interpreter this module ran under. The role makes it the interpreter of
            C(netlb-multiwan-apply), which runs the modules' engine (with pyroute2) at boot.
          type: str
          sample: /usr/bin/python3
        recorded:
          description: >-
            The state document at O(state_file) as the role last wrote it (and C(netlb-multiwan drain)
            and C(weight) changed it), or null when there is none or it cannot be read (then
            C(recorded_error) says why).
          type: dict
          sample: {version: 1, steering: fwmark, uplinks: [{name: wifi, table: 100, mark: 256, drained: true}]}
        recorded_error:
          description: Why O(state_file) exists but could not be read, else null.
          type: str
        mptcp:
          description: Whether the host can have O(mptcp).
          type: dict
          contains:
            mode:
              description: O(mptcp).
              type: str
            problem:
              description: Why not, in one sentence; null when it can (always null for V(off)).
              type: str
          sample: {mode: upgrade, problem: "the kernel has no update_socket_protocol hook (Linux < 6.6)"}
"""

import os
import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netlb.multiwan.plugins.module_utils import cgroup, install, mptcp, state_store
from ansible_collections.netlb.multiwan.plugins.module_utils import kernel_support

# os-release ID or ID_LIKE word -> the os_family that ansible.builtin.setup reports.
OS_FAMILIES = (
    ("Debian", ("debian", "ubuntu", "raspbian", "linuxmint", "pop")),
    ("RedHat", ("rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn")),
    ("Suse", ("suse", "opensuse", "sles", "opensuse-leap", "opensuse-tumbleweed")),
    ("Archlinux", ("arch", "manjaro", "endeavouros")),
    ("Alpine", ("alpine",)),
)


def os_release(path="/etc/os-release"):
    values = {}
    try:
        with open(path) as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                if sep and not key.startswith("#"):
                    values[key] = value.strip().strip("\"'")
    except (IOError, OSError):
        pass
    return values


def os_family(release):
    words = [release.get("ID", "")] + release.get("ID_LIKE", "").split()
    for word in words:
        for family, members in OS_FAMILIES:
            if word.lower() in members:
                return family
    return None


DEFAULT_STATE_FILE = state_store.DEFAULT_PATH


def recorded_state(path):
    """(the state document, None) or (None, why not): None, None when there is none."""
    try:
        return state_store.read(path), None
    except state_store.StateError as exc:
        return None, str(exc)


def collect(root="/", state_file=DEFAULT_STATE_FILE, mptcp_mode="off", steering="fwmark"):
    """The fact, from the files under *root* (tests point it at a fake tree)."""
    def at(path):
        return os.path.join(root, path.lstrip("/"))

    recorded, recorded_error = recorded_state(at(state_file))

    try:
        with open(at("/proc/mounts")) as handle:
            mounts_text = handle.read()
    except (IOError, OSError):
        mounts_text = ""
    supported, reason = kernel_support.vrf_support(
        sys_module=at("/sys/module/vrf"), lib_modules=at("/lib/modules"), cmdline=at("/proc/cmdline"))
    return {
        "kernel": kernel_support.kernel_release(),
        "systemd": install.systemd_running(root),
        "udev": os.path.exists(at("/run/udev/control")),
        "cgroup2": cgroup.cgroup2_mount(mounts_text),
        "bpffs": next((point for point, kind in cgroup.mounts(mounts_text) if kind == "bpf"), None),
        "vrf": {"loaded": os.path.isdir(at("/sys/module/vrf")), "supported": supported, "reason": reason},
        "os_family": os_family(os_release(at("/etc/os-release"))),
        # The interpreter modules run under (it has pyroute2): the boot command's shebang.
        "python": sys.executable,
        "recorded": recorded,
        "recorded_error": recorded_error,
        "mptcp": {"mode": mptcp_mode,
                  "problem": mptcp.check({"mptcp": mptcp_mode, "steering": steering}, path=at(mptcp.ENABLED_SYSCTL))},
    }


def problem(facts, mptcp_mode):
    """Why the host cannot run the balancer (O(require)), or None."""
    return kernel_support.requirement_problem(facts["kernel"], facts["cgroup2"], mptcp_mode, facts["mptcp"]["problem"])


def main():
    module = AnsibleModule(argument_spec=dict(state_file=dict(type="path", default=DEFAULT_STATE_FILE),
                                              mptcp=dict(type="str", default="off", choices=list(mptcp.MODES)),
                                              steering=dict(type="str", default="fwmark"),
                                              require=dict(type="bool", default=False)),
                           supports_check_mode=True)
    facts = collect(state_file=module.params["state_file"], mptcp_mode=module.params["mptcp"],
                    steering=module.params["steering"])
    if facts["recorded_error"]:
        module.warn("state_file: %s; what the last run recorded is ignored" % facts["recorded_error"])
    why = problem(facts, module.params["mptcp"]) if module.params["require"] else None
    if why:
        module.fail_json(msg=why, ansible_facts={"netlb_multiwan": facts})
    module.exit_json(changed=False, ansible_facts={"netlb_multiwan": facts})


if __name__ == "__main__":
    main()
