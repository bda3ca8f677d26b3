#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: balancer_apply
short_description: Converge a balancer host to its whole state document, in phases
version_added: "0.2.0"
description:
  - Takes the whole state document of a host (built by the filter P(netlb.multiwan.balancer_state#filter)
    from the host's plan) and converges everything the balancer owns on the host, under the document's lock,
    the way the C(netlb.multiwan.balancer) role needs it in one task.
  - "Phases: every uplink's routing is checked before the first change (a refused uplink, for example one
    whose interface carries the Ansible connection, changes nothing); the host's O(files) are installed and
    its O(units) converged (retired, enabled, the slices started); an uplink whose VRF or fwmark table goes is first
    taken out of the running maps (no socket is steered to it while its routing is removed); the program is detached
    from the attachments, and the VRFs and fwmark tables are removed, that the recorded document has and the new one lacks; each extra uplink gets its VRF
    (as M(netlb.multiwan.vrf)) or fwmark table (as M(netlb.multiwan.fwmark_table)); the document is
    written, keeping the drains made on the host; the program is attached to every attachment (as
    M(netlb.multiwan.cgroup_bpf_attach)); the runtime maps, source rules, MPTCP endpoints and C(rp_filter)
    are converged (as M(netlb.multiwan.balancer_maps)); the services of O(units.started) are started."
  - The role runs it once per host for all of that, with O(install) and O(require), so a run that changes nothing
    costs each host this one module run.
  - The boot unit (C(netlb-multiwan-apply)) runs the same engine from the document on disk.
author:
  - netlb.multiwan contributors (@netlb)
requirements:
  - pyroute2 and bpftool on the managed host
  - Linux 5.8 or later with cgroup v2
options:
  content:
    description:
      - The planned document, as a dict or as JSON text.
      - Checked as every reader of the document checks it (version, uplinks, attachments) before anything
        is changed; each uplink's routing is checked by the engines of M(netlb.multiwan.vrf) and
        M(netlb.multiwan.fwmark_table); an C(mptcp) mode the host cannot have (VRF steering, a kernel
        without MPTCP) is refused the same way, naming C(mptcp).
      - Required with O(state=present). With O(state=absent), what it names is removed too (an uplink
        of the inventory that no run recorded on the host).
    type: raw
  state:
    description:
      - V(present) converges the host to O(content).
      - V(absent) undoes everything the document recorded on the host (and O(content) names), in phases
        under the lock - the program detached from every attachment and unpinned, the VRFs and fwmark
        tables with their rules removed, every C(rp_filter) value the balancer loosened put back, the
        MPTCP endpoints it made removed and the subflows limit put back, the document removed. The role's
        units, commands and program file are the role's to remove.
    type: str
    choices: [present, absent]
    default: present
  path:
    description: Where the document lives on the host.
    type: path
    default: /etc/netlb-multiwan/balancer.json
  files:
    description:
      - Files the document's host needs (the engine and its commands, the units, the program), each converged to its
        content and mode as M(netlb.multiwan.file_set) does, once every check passed and before the kernel is changed.
      - Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The whole content, as text. Exactly one of O(files[].content) and O(files[].content_base64).
        type: str
      content_base64:
        description: The whole content, base64-encoded (a compiled BPF object); the diff shows its size and SHA-256.
        type: str
      mode:
        description: Permissions, as an octal string.
        type: str
        default: "0644"
  units:
    description:
      - The systemd units of the host's O(files), converged with one C(systemctl show) when nothing is to change.
      - Without systemd as PID 1 (containers, chroots, a host prepared for its first boot) C(systemctl --root=/)
        works on the unit files and nothing is started.
    type: dict
    default: {}
    suboptions:
      enabled:
        description: Units enabled for the next boot (C(systemctl enable)).
        type: list
        elements: str
        default: []
      started:
        description:
          - Units running now. Slices are started before the program is attached (their cgroup exists only while
            they are active); services after the maps (the health tracker reads the new document).
        type: list
        elements: str
        default: []
      retire:
        description:
          - Unit files in O(units.retire.paths) whose names match O(units.retire.patterns) and that O(files) does not
            list (the unit of an uplink taken out of the inventory; every one with O(state=absent)) are stopped,
            disabled and removed, and systemd reloaded. A unit only moving between directories (named in
            O(units.enabled) or O(units.started)) is not stopped.
        type: dict
        suboptions:
          paths:
            description: Directories to look in (not recursively).
            type: list
            elements: path
            required: true
          patterns:
            description: Shell-style patterns of unit file names (C(netlb-multiwan-*.service)).
            type: list
            elements: str
            required: true
  install:
    description:
      - The role's engine commands and units around the document, decided on the host itself - whether systemd runs
        (units started; a slice to attach to), whether udev does (an uplink's unit bound to its device), the
        interpreter this module runs under (the commands' shebang; it has pyroute2) - so that the controller needs no
        facts of the host. Added to O(files) and O(units).
      - "With O(install.persist): C(netlb-multiwan-bpf.service) and a C(netlb-multiwan-uplink-NAME.service) per routed
        uplink in C(/etc/systemd/system), enabled (they re-apply the document at boot with C(netlb-multiwan-apply)), and
        the vrf driver in C(/etc/modules-load.d) when the steering needs it."
      - "The health tracker's unit (C(netlb-multiwan-track.service)) when an uplink is tracked or has a data budget, and
        the slice when an attachment names it (its attachment is left out of the document without systemd running):
        in C(/etc/systemd/system) with O(install.persist), otherwise in C(/run/systemd/system) and only under a
        running systemd; started."
      - Every other unit file of the role in those directories is retired (as O(units.retire)); with O(state=absent)
        all of them are.
    type: dict
    suboptions:
      persist:
        description: Units that re-apply the document at boot, every unit in C(/etc/systemd/system) and enabled.
        type: bool
        default: true
      slice:
        description: The slice's unit name (C(multiwan.slice)); its unit file is the role's; empty for none.
        type: str
        default: ""
      commands:
        description:
          - The engine's commands to install, by name (C(netlb-multiwan), C(netlb-multiwan-status),
            C(netlb-multiwan-apply), C(netlb-multiwan-track)), each mapped to its path. C(netlb-multiwan-apply) is
            installed only with O(install.persist), C(netlb-multiwan-track) only where the tracker runs.
          - With them, the engine they run - the collection's C(module_utils) they import, followed through every
            import - as a package under O(install.lib), from this module's own payload (the code the module runs,
            with nothing sent as arguments).
        type: dict
        default: {}
      lib:
        description: Where the engine's package is installed (put on the commands' C(sys.path)).
        type: path
        default: /usr/local/lib/netlb-multiwan
      header:
        description: The first comment line of each unit file.
        type: str
        default: Ansible managed
  require:
    description:
      - Fail before anything changes on a host that cannot run the balancer - a kernel older than 5.8, no cgroup v2,
        an MPTCP mode it cannot have - naming the reason, as M(netlb.multiwan.balancer_facts) does. Only with
        O(state=present).
    type: bool
    default: false
  keep_drains:
    description:
      - Keep each uplink's C(drained) flag as the document on the host has it (set by
        C(netlb-multiwan drain)), read under the lock the command writes under.
      - V(false) undrains every uplink.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: On a host without the installed program, the attachments are reported as to be made.
  diff_mode:
    support: full
    details: One diff per file that changes, then one per phase that changes something; the document's as its
      text before and after.
  platform:
    platforms: posix
notes:
  - The standalone modules M(netlb.multiwan.vrf), M(netlb.multiwan.fwmark_table) and
    M(netlb.multiwan.cgroup_bpf_attach) run the same engines, one piece at a time.
seealso:
  - module: netlb.multiwan.balancer_info
  - module: netlb.multiwan.balancer_maps
"""

EXAMPLES = r"""
- name: Converge the host to its plan
  netlb.multiwan.balancer_apply:
    content: "{{ _balancer_plan | netlb.multiwan.balancer_state(balancer_settings) }}"

- name: The same, undoing every drain an operator made on the host
  netlb.multiwan.balancer_apply:
    content: "{{ _balancer_plan | netlb.multiwan.balancer_state(balancer_settings) }}"
    keep_drains: false

- name: The same, as the role does - the host checked, its commands, engine and units, and the program
  netlb.multiwan.balancer_apply:
    content: "{{ _balancer_plan | netlb.multiwan.balancer_state(balancer_settings) }}"
    require: true
    install:
      persist: true
      slice: multiwan.slice
      commands:
        netlb-multiwan: /usr/local/sbin/netlb-multiwan
        netlb-multiwan-status: /usr/local/sbin/netlb-multiwan-status
        netlb-multiwan-apply: /usr/local/sbin/netlb-multiwan-apply
        netlb-multiwan-track: /usr/local/sbin/netlb-multiwan-track
    files:
      - path: /var/lib/netlb-multiwan/multiwan.bpf.o
        content_base64: "{{ lookup('ansible.builtin.file', 'build/multiwan.bpf.o.b64') }}"

- name: A unit of your own beside the document, enabled and started
  netlb.multiwan.balancer_apply:
    content: "{{ _balancer_plan | netlb.multiwan.balancer_state(balancer_settings) }}"
    files:
      - path: /etc/systemd/system/uplink-report.service
        content: "{{ lookup('ansible.builtin.template', 'uplink-report.service.j2') }}"
    units:
      enabled: [uplink-report.service]
      started: [uplink-report.service]

- name: Remove everything the balancer set up in the kernel, and its document
  netlb.multiwan.balancer_apply:
    state: absent
"""

RETURN = r"""
actions:
  description: What each phase did (or would do, in check mode), by phase.
  returned: always
  type: dict
  sample:
    files: ["write /etc/systemd/system/netlb-multiwan-track.service"]
    units: ["daemon-reload", "enable netlb-multiwan-track.service", "start netlb-multiwan-track.service"]
    withdraw: []
    detach: []
    retire: []
    routing: ["wifi: create vrf wifi-vrf table 10", "wifi: enslave wlp1s0 to wifi-vrf"]
    document: ["write /etc/netlb-multiwan/balancer.json"]
    attach: ["multiwan: load /var/lib/netlb-multiwan/multiwan.bpf.o into /sys/fs/bpf/netlb/3f2a"]
    maps: ["multiwan: selection"]
drained:
  description: The uplinks the written document has drained (kept from the host).
  returned: when O(state=present)
  type: list
  elements: str
  sample: [wifi]
phase:
  description: The phase that failed.
  returned: failure
  type: str
  sample: routing
"""

import json
import os
import sys
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.netlb.multiwan.plugins.module_utils import (apply, cgroup, install, kernel_support, layout,
                                                                     mptcp, runner, state_store)
from ansible_collections.netlb.multiwan.plugins.module_utils import files as file_utils
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils.cli import Host


def diffs(host, engine, path):
    """One diff per file that changes, then one per phase that changes something, in phase order."""
    out = list(host.diff)
    if host.actions["units"]:
        out.append({"before_header": "units", "after_header": "units", "before": "",
                    "after": "".join("+ %s\n" % a for a in host.actions["units"])})
    for phase in apply.PHASES:
        if phase == "document":
            if engine.document_after != engine.document_before:
                out.append({"before_header": path if engine.document_before is not None else "%s (absent)" % path,
                            "after_header": path if engine.document_after is not None else "%s (absent)" % path,
                            "before": engine.document_before or "", "after": engine.document_after or ""})
        elif engine.actions[phase]:
            out.append({"before_header": phase, "after_header": phase, "before": "",
                        "after": "".join("+ %s\n" % a for a in engine.actions[phase])})
    return out


def _carry_the_engine():
    """Never called: importing the host's commands' modules here makes Ansible carry them (and
    what they import) in this module's payload, from which option install writes the engine."""
    from ansible_collections.netlb.multiwan.plugins.module_utils import balancer_status, boot, cli, tracker  # noqa: F401 pylint: disable=unused-import


def with_layout(module, planned, files, units, systemd):
    """O(install): the document as this host can have it, the role's commands and units
    added to O(files) and O(units)."""
    spec = module.params["install"]
    unknown = sorted(set(spec["commands"]) - set(layout.COMMANDS))
    if unknown:
        module.fail_json(msg="install.commands: unknown command %s (known: %s)"
                         % (", ".join(unknown), ", ".join(sorted(layout.COMMANDS))), field="install.commands")
    if isinstance(planned, dict):
        planned = layout.for_host(planned, systemd)
    retire = units.get("retire") or layout.retire_spec(spec["slice"], systemd)
    if module.params["state"] == "absent":  # every unit file of the role goes
        return planned, [], dict(units, retire=retire)
    role = layout.Layout(planned, spec["persist"], spec["slice"], spec["commands"], systemd,
                         os.path.exists("/run/udev/control"), sys.executable, lib=spec["lib"], header=spec["header"])
    role_units = role.units()
    merged = dict((key, list(units.get(key) or []) + role_units[key]) for key in ("enabled", "started"))
    return planned, role.files() + list(files), dict(merged, retire=retire)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            content=dict(type="raw"),
            path=dict(type="path", default=state_store.DEFAULT_PATH),
            keep_drains=dict(type="bool", default=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            files=dict(type="list", elements="dict", default=[], options=file_utils.FILE_ENTRY_SPEC),
            units=dict(type="dict", default={}, options=dict(
                enabled=dict(type="list", elements="str", default=[]),
                started=dict(type="list", elements="str", default=[]),
                retire=dict(type="dict", options=dict(
                    paths=dict(type="list", elements="path", required=True),
                    patterns=dict(type="list", elements="str", required=True),
                )),
            )),
            install=dict(type="dict", options=dict(
                persist=dict(type="bool", default=True),
                slice=dict(type="str", default=""),
                commands=dict(type="dict", default={}),
                lib=dict(type="path", default=layout.DEFAULT_LIB),
                header=dict(type="str", default=layout.DEFAULT_HEADER),
            )),
            require=dict(type="bool", default=False),
        ),
        required_if=[("state", "present", ["content"])],
        supports_check_mode=True,
    )
    module.run_command_environ_update = dict(LANG="C", LC_ALL="C", LC_MESSAGES="C")
    if not nl.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=to_native(nl.PYROUTE2_IMPORT_ERROR))
    present = module.params["state"] == "present"
    planned = module.params["content"]
    if planned is not None and not isinstance(planned, dict):
        try:
            planned = json.loads(to_native(planned))
        except ValueError as exc:
            module.fail_json(msg="content: not JSON: %s" % to_native(exc), field="content")
    if planned is not None:
        try:
            planned = state_store.validate(planned, "content")
        except state_store.StateError as exc:
            module.fail_json(msg=to_native(exc), field="content")
    systemd = install.systemd_running()
    files, units = module.params["files"] if present else [], module.params["units"]
    if module.params["install"] is not None:
        planned, files, units = with_layout(module, planned, files, units, systemd)
    if present and module.params["require"] and isinstance(planned, dict):
        why = kernel_support.requirement_problem(kernel_support.kernel_release(), cgroup.cgroup2_mount(),
                                                 mptcp.mode(planned), mptcp.check(planned))
        if why:
            module.fail_json(msg=why, phase="check", field="mptcp" if "mptcp" in why else None)
    systemctl = module.get_bin_path("systemctl")
    try:
        host = install.Install(file_utils.validate_set(files), units,
                               systemctl and runner.CmdRunner(systemctl, module=module),
                               systemd, check_mode=module.check_mode, move=module.atomic_move)
        engine = apply.Apply(planned, lambda params: Host(params, check_mode=module.check_mode),
                             path=module.params["path"], keep_drains=module.params["keep_drains"],
                             check_mode=module.check_mode, before_change=host.prepare)
    except file_utils.FileSetError as exc:
        module.fail_json(msg=to_native(exc), field=exc.field)
    except state_store.StateError as exc:
        module.fail_json(msg=to_native(exc), field="content")
    actions = dict(host.actions, **engine.actions)
    try:
        if present:
            doc = engine.run()
        else:
            host.prepare()  # the units first: a teardown that stops half-way is not re-applied at boot
            doc = engine.remove()
        host.finish()
    except (apply.ApplyError, install.InstallError) as exc:
        module.fail_json(msg=to_native(exc), phase=exc.phase, field=exc.field, actions=actions)
    except (IOError, OSError) as exc:
        module.fail_json(msg="path: %s" % to_native(exc), field="path", actions=actions,
                         exception=traceback.format_exc())
    for warning in engine.warnings:
        module.warn(warning)
    result = dict(changed=any(actions.values()), actions=actions)
    if present:
        result["drained"] = [u["name"] for u in doc["uplinks"] if u.get("drained")]
    if module._diff:
        result["diff"] = diffs(host, engine, module.params["path"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
