#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: balancer_info
short_description: Status of a netlb.multiwan balancer host (uplinks, connections, attachments, problems)
version_added: "0.1.0"
description:
  - Reads the state file the C(netlb.multiwan.balancer) role writes and compares it with the live
    kernel, like C(mwan3 status).
  - Per uplink, the link state and carrier, global addresses, the VRF the interface is actually
    enslaved to, its table's routes and whether it has a default route (read over netlink, as the
    health tracker reads them), whether a socket steered to it would find a usable path (the
    tracker's own definition), and the number of connections the program gave it (the
    C(mw_counters) map).
  - Per attachment, whether the cgroup exists, which programs are attached at each hook, whether
    they are the pinned ones of the installed object. For fwmark steering, whether every
    C(ip rule fwmark) is present.
  - Everything it finds wrong is listed in RV(balancer.problems); a missing state file, bpftool or
    pin is a problem, not a failure, unless O(fail_on_problems=true).
  - Never changes anything. The same collector is installed on managed hosts by the role as the
    command C(netlb-multiwan-status).
author:
  - netlb.multiwan contributors (@netlb)
requirements:
  - pyroute2 and bpftool on the managed host (the role installs both); without them the status says
    what it could not check
options:
  state_file:
    description: State file written by the C(netlb.multiwan.balancer) role.
    type: path
    default: /etc/netlb-multiwan/balancer.json
  fail_on_problems:
    description: Fail when RV(balancer.problems) is not empty (the status is returned all the same).
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module never changes anything, so it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Counters live in the maps of the loaded object; a replaced object starts from zero.
seealso:
  - module: netlb.multiwan.cgroup_bpf_attach
  - module: netlb.multiwan.fwmark_table
  - module: netlb.multiwan.vrf
"""

EXAMPLES = r"""
- name: Read the balancer status
  netlb.multiwan.balancer_info:
  register: status

- name: Show the share of each uplink
  ansible.builtin.debug:
    msg: "{{ status.balancer.uplinks | map(attribute='name') | zip(status.balancer.uplinks | map(attribute='share')) }}"

- name: Fail a health check when anything is wrong
  netlb.multiwan.balancer_info:
    fail_on_problems: true
"""

RETURN = r"""
balancer:
  description: The status.
  returned: always
  type: dict
  contains:
    state_file:
      description: The state file read.
      type: str
      sample: /etc/netlb-multiwan/balancer.json
    state_found:
      description: Whether the state file was found and readable; when false, little else is filled.
      type: bool
      sample: true
    steering:
      description: V(vrf) or V(fwmark), from the state file.
      type: str
      sample: fwmark
    policy:
      description: How the program picks an uplink, from the state file.
      type: str
      sample: round_robin
    ipv6:
      description: Whether the program is attached at connect6 too.
      type: bool
      sample: true
    object:
      description: Path of the installed BPF object.
      type: str
      sample: /var/lib/netlb-multiwan/multiwan.bpf.o
    object_digest:
      description: The first 16 hex characters of the installed object's sha256 (its pin directory name).
      type: str
      sample: 5f0c7a1b2c3d4e5f
    uplinks:
      description:
        - One entry per uplink, in counter slot order.
        - C(drained) is true while an operator has drained it (C(netlb-multiwan drain NAME)).
        - C(health) is what the health tracker (C(netlb-multiwan-track)) decided, null for an untracked uplink.
        - C(rp_filter) is the kernel's effective reverse-path filtering on the interface (the higher of
          C(conf.all) and its own; 1 strict, 2 loose), null when unknown.
      type: list
      elements: dict
      sample:
        - slot: 1
          name: wifi
          interface: wlp1s0
          exists: true
          operstate: up
          carrier: true
          master: null
          addresses: [10.0.0.2/24]
          vrf: null
          device: null
          table: 100
          mark: 256
          weight: 1
          tier: 1
          standby: false
          drained: false
          rp_filter: 2
          gateway: 10.0.0.1
          gateway6: null
          routes: [default via 10.0.0.1 dev wlp1s0]
          default_route: true
          usable: true
          usable_reason: wlp1s0 usable
          default_route6: null
          connections: 25
          errors: 0
          share: 50.0
          health: {state: up, since: 1764675000.5, reason: 4 good probe rounds in a row, rtt_ms: 0.4, loss: 0.0,
                   transitions: 2, probes_sent: 1200, probes_lost: 12, connections_reset: 3}
      contains:
        health:
          description:
            - C(state) V(up), V(down) or V(unknown) (the tracker has not reported), C(since) (Unix time of the
              last transition), C(reason), C(rtt_ms) and C(loss) of the last probe round, C(transitions),
              C(probes_sent), C(probes_lost), C(connections_reset) (TCP connections the tracker destroyed when
              the uplink went down, see the role's C(balancer_track_reset)). Null when the uplink is not tracked.
          type: dict
        table:
          description: The uplink's routing table; V(main) for the uplink whose sockets are left alone.
          type: raw
        master:
          description: The device the interface is actually enslaved to (its VRF), or null.
          type: str
        routes:
          description: >-
            Routes of the uplink's table (for the main-table uplink, those through its interface), as
            C(ip route) prints them.
          type: list
          elements: str
        usable:
          description: >-
            Whether a socket steered to the uplink would find its path (the link up with carrier, a
            global address and a default route through it in its table, for each family it serves;
            for vrf steering, the interface enslaved to its VRF) - what the health tracker takes an
            uplink down for. Null when the kernel could not be read.
          type: bool
        usable_reason:
          description: The first thing found missing, or C(<interface> usable).
          type: str
        tier:
          description: The uplink's priority tier (1 first); see RV(balancer.active_tier).
          type: int
        budget:
          description:
            - A metered uplink's data budget (null for none) - C(bytes), C(period), C(when_spent) from the state
              document; C(used) (bytes this period, both ways), C(spent), C(period_start) and C(period_end) (Unix
              times) as the health tracker counted them (null before it has).
          type: dict
        standby:
          description: >-
            Up, not drained and weighted, but of a higher tier than RV(balancer.active_tier): it gets no new
            connections until every uplink of the lower tiers is down or drained.
          type: bool
        default_route:
          description: Whether the table has an IPv4 default route through the interface; null when not checked.
          type: bool
        default_route6:
          description: The same for IPv6; checked when the uplink has a C(gateway6) and IPv6 is balanced.
          type: bool
        connections:
          description: >-
            Sockets the program gave this uplink, summed over every attachment; for the main-table
            uplink the sockets it left alone. Null when the counters could not be read.
          type: int
        errors:
          description: Sockets whose steering failed (bpf_setsockopt); they went out unsteered.
          type: int
        share:
          description: This uplink's percentage of RV(balancer.connections).
          type: float
    active_tier:
      description: >-
        The tier new connections go to: the lowest with an uplink up (as the health tracker says), not
        drained and weighted above 0. Null when no uplink is.
      type: int
      sample: 1
    connections:
      description: Connections given to any uplink (the sum of the uplinks' C(connections)).
      type: int
      sample: 50
    skipped:
      description: Sockets never steered (loopback, link-local, excluded prefixes, already bound or marked).
      type: int
      sample: 3
    skipped_by_reason:
      description:
        - RV(balancer.skipped) by reason - C(no_uplink) (none usable), C(local) (loopback, link-local, multicast),
          C(excluded) (a prefix or port), C(bound) (by the application), C(foreign_netns) (another network
          namespace's), C(type) (neither stream nor datagram); C(unspecified) for a program before 0.2.0.
      type: dict
      sample: {"no_uplink": 0, "local": 3, "excluded": 0, "bound": 0, "foreign_netns": 0, "type": 0}
    mptcp:
      description:
        - MPTCP as the state document's C(mptcp) asks for it; null when it is V(off) and nothing of it is left.
        - C(endpoints) per uplink (address and flags), C(subflows) per uplink (established), C(connections)
          (established MPTCP connections of the host), C(fell_back) (of those, the ones the far end answered
          as plain TCP), C(fallbacks_since_boot) (the kernel's MPTcpExt counter).
        - C(upgrade) for V(upgrade) (else null) - C(attached), C(upgraded) (TCP sockets of the balanced
          applications made MPTCP) and C(left_alone) (TCP sockets of other tasks), counted since it was attached.
      type: dict
      returned: when the state file was read
      sample:
        mode: paths
        connections: 1
        fell_back: 0
        fallbacks_since_boot: 0
        endpoints: {"wifi": ["10.0.2.2 subflow"], "mobile": ["10.0.1.2 subflow"]}
        subflows: {"wifi": 1, "mobile": 1}
        upgrade: null
    attachments:
      description: Every cgroup the program should be attached to.
      type: list
      elements: dict
      sample:
        - cgroup: multiwan
          path: /sys/fs/cgroup/multiwan
          exists: true
          processes: 2
          pin_dir: /sys/fs/bpf/netlb_multiwan
          pinned: [5f0c7a1b2c3d4e5f]
          object: 5f0c7a1b2c3d4e5f
          current: true
          hooks:
            - attach_type: connect4
              ok: true
              programs: [{id: 529, name: mw_connect4, attach_flags: multi, pinned: true}]
          counters: [{steered: 25, errors: 0}, {steered: 25, errors: 0}, {steered: 3, errors: 0}]
    rules:
      description: >-
        fwmark steering, the C(ip rule fwmark MARK lookup TABLE) of each marked uplink per family;
        vrf steering, the C(l3mdev) rule.
      type: list
      elements: dict
      sample: [{family: IPv4, rule: fwmark 0x100 lookup 100, uplink: wifi, present: true, priority: 10000}]
    tools:
      description: The path of C(bpftool) and the version of pyroute2 on the host (null when missing).
      type: dict
      sample: {bpftool: /usr/sbin/bpftool, pyroute2: 0.7.7}
    problems:
      description: Everything found wrong, one sentence each, naming the uplink or attachment.
      type: list
      elements: str
      sample: ["wifi: not usable: wlp1s0 is down", "attachment multiwan: program not attached at connect6"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netlb.multiwan.plugins.module_utils.balancer_status import collect


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state_file=dict(type="path", default="/etc/netlb-multiwan/balancer.json"),
            fail_on_problems=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    status = collect(module.params["state_file"])
    problems = status["problems"]
    if problems and module.params["fail_on_problems"]:
        module.fail_json(msg="balancer status: %d problem(s): %s" % (len(problems), "; ".join(problems)),
                         balancer=status)
    module.exit_json(changed=False, balancer=status)


if __name__ == "__main__":
    main()
