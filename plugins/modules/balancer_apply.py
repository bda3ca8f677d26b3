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
    whose interface carries the Ansible connection, changes nothing); an uplink whose VRF or fwmark table goes is first
    taken out of the running maps (no socket is steered to it while its routing is removed); the program is detached
    from the attachments, and the VRFs and fwmark tables are removed, that the recorded document has and the new one lacks; each extra uplink gets its VRF
    (as M(netlb.multiwan.vrf)) or fwmark table (as M(netlb.multiwan.fwmark_table)); the document is
    written, keeping the drains made on the host; the program is attached to every attachment (as
    M(netlb.multiwan.cgroup_bpf_attach)); the runtime maps, source rules, MPTCP endpoints and C(rp_filter)
    are converged (as M(netlb.multiwan.balancer_maps))."
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
    details: One diff per phase that changes something; the document's as its text before and after.
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
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.netlb.multiwan.plugins.module_utils import apply, state_store
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils.cli import Host


def diffs(engine, path):
    """One diff per phase that changes something, in phase order."""
    out = []
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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            content=dict(type="raw"),
            path=dict(type="path", default=state_store.DEFAULT_PATH),
            keep_drains=dict(type="bool", default=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", ["content"])],
        supports_check_mode=True,
    )
    if not nl.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=to_native(nl.PYROUTE2_IMPORT_ERROR))
    present = module.params["state"] == "present"
    planned = module.params["content"]
    if planned is not None and not isinstance(planned, dict):
        try:
            planned = json.loads(to_native(planned))
        except ValueError as exc:
            module.fail_json(msg="content: not JSON: %s" % to_native(exc), field="content")
    try:
        engine = apply.Apply(planned, lambda params: Host(params, check_mode=module.check_mode),
                             path=module.params["path"], keep_drains=module.params["keep_drains"],
                             check_mode=module.check_mode)
    except state_store.StateError as exc:
        module.fail_json(msg=to_native(exc), field="content")
    try:
        doc = engine.run() if present else engine.remove()
    except apply.ApplyError as exc:
        module.fail_json(msg=to_native(exc), phase=exc.phase, field=exc.field, actions=engine.actions)
    except (IOError, OSError) as exc:
        module.fail_json(msg="path: %s" % to_native(exc), field="path", actions=engine.actions,
                         exception=traceback.format_exc())
    for warning in engine.warnings:
        module.warn(warning)
    result = dict(changed=engine.changed, actions=engine.actions)
    if present:
        result["drained"] = [u["name"] for u in doc["uplinks"] if u.get("drained")]
    if module._diff:
        result["diff"] = diffs(engine, module.params["path"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
