# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the netlb.multiwan.balancer role.

balancer_plan turns a host's inventory (balancer_uplinks and friends) into
its validated plan, from which the state document is built (balancer_state).
The plan lives in plugin_utils/plan.py, shared with the tests; its rules are
the collection's one schema (module_utils/schema.py, which the modules use
too), so the same rules guard every name and number that reaches a host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: balancer_plan
short_description: Validated plan (uplinks, routing, tracking) of a balancer host
version_added: "0.1.0"
description:
  - Checks a host's uplinks (names, interfaces, VRF devices, marks, weights), steering, policy and
    excluded prefixes, tables and gateways. Returns the state document's C(uplinks) and C(routing), one
    entry per uplink outside the main table.
  - The program is one object for every host; how each uplink is steered reaches it through its maps.
  - Fails with a message naming the field, e.g. C(balancer_uplinks[1].weight).
options:
  _input:
    description: The host's C(balancer_uplinks).
    type: list
    elements: dict
    required: true
  steering:
    description: C(vrf), C(fwmark) or C(device).
    type: str
    required: true
  policy:
    description: C(random), C(weighted), C(round_robin) or C(hash_dst).
    type: str
    required: true
  exclude:
    description: Prefixes never steered.
    type: list
    elements: str
    default: []
  track:
    description:
      - The role's tracking defaults (C(balancer_track_*) as a dict of method, interval_ms, timeout_ms, down, up,
        quorum, targets), or null when uplinks are tracked only if they ask to be.
      - The result's C(track) maps each uplink's name to its merged settings, or null when it is not tracked.
    type: dict
  exclude_ports:
    description:
      - Destination ports never steered, as C({proto, port}) with C(proto) C(tcp) or C(udp) and C(port) a port
        or an ordered range (C(6881-6889)). The result's C(exclude_ports) holds them normalised.
    type: list
    elements: dict
    default: []
  host:
    description: Host name, named in the error message of a host whose inventory is refused.
    type: str
"""

EXAMPLES = r"""
- name: The plan of this host
  ansible.builtin.set_fact:
    balancer_plan: "{{ balancer_uplinks | netlb.multiwan.balancer_plan(steering='vrf', policy='random') }}"

- name: fwmark steering, with prefixes that are never steered
  ansible.builtin.set_fact:
    balancer_plan: >-
      {{ balancer_uplinks | netlb.multiwan.balancer_plan(steering='fwmark', policy='weighted',
         exclude=['10.0.0.0/8', '2001:db8::/32']) }}
"""

RETURN = r"""
_value:
  description:
    - C(uplinks) (the state document's, in slot order), C(routing) (list of uplinks outside main), C(track),
      C(exclude) (the excluded prefixes, normalised) and C(exclude_ports) (the port exclusions, normalised).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.netlb.multiwan.plugins.module_utils.schema import SchemaError
from ansible_collections.netlb.multiwan.plugins.plugin_utils import plan


def balancer_plan(uplinks, steering, policy, exclude=None, host=None, track=None, exclude_ports=None):
    try:
        ctx = plan.plan(uplinks, steering=steering, policy=policy, exclude=list(exclude or []), host=host,
                        track=track, exclude_ports=list(exclude_ports or []))
    except SchemaError as exc:
        # Name the inventory variable (uplinks[1].weight -> balancer_uplinks[1].weight), and the
        # host when given: the role plans every host in one expression.
        raise AnsibleFilterError("%sbalancer_%s: %s" % ("%s: " % host if host else "", exc.field, exc.message))
    return ctx


class FilterModule(object):
    def filters(self):
        return {"balancer_plan": balancer_plan}
