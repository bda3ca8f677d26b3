# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state document of a balancer host, whole, from its plan and the role's settings.

Built here in Python (module_utils/state_store.document), not in a template: every value
comes from the plan that checked it (the weight as the schema read it, the gateways
normalised) or is a setting of a declared type.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: balancer_state
short_description: The state document of a balancer host, from its plan
version_added: "0.2.0"
description:
  - Turns the result of P(netlb.multiwan.balancer_plan#filter) and the role's settings into the state document
    the role hands to M(netlb.multiwan.balancer_apply) (version 1).
  - Fails with a message naming the setting when one is missing, unknown or of the wrong type.
options:
  _input:
    description: The host's plan (P(netlb.multiwan.balancer_plan#filter)).
    type: dict
    required: true
  settings:
    description:
      - C(ipv6), C(object), C(attach_types), C(attachments), C(attach_method), C(rule_priority), C(force),
        C(metrics_textfile), C(netns_guard), C(rp_filter), C(state_dir) and C(mptcp), each of its type.
      - Exactly one of O(settings) and O(role).
    type: dict
  role:
    description:
      - The role's variables the settings come from, by their names without C(balancer_) - C(ipv6), C(state_dir),
        C(cgroup), C(pin_dir), C(slice), C(attach_method), C(rule_priority), C(force), C(metrics_textfile),
        C(netns_guard), C(rp_filter), C(mptcp) - read as the role's argument specs type them (C("false") is
        false). The hooks follow the plan's steering and C(ipv6); the attachments are the cgroup and, below the
        root cgroup, the slice.
      - Exactly one of O(settings) and O(role).
    type: dict
"""

EXAMPLES = r"""
- name: The document of this host
  ansible.builtin.set_fact:
    balancer_planned_document: "{{ _balancer_plan | netlb.multiwan.balancer_state(settings) }}"

- name: The same, from the role's variables
  ansible.builtin.set_fact:
    balancer_planned_document: >-
      {{ _balancer_plan | netlb.multiwan.balancer_state(role={'ipv6': true, 'state_dir': '/var/lib/netlb-multiwan',
           'cgroup': 'multiwan', 'pin_dir': '/sys/fs/bpf/netlb_multiwan', 'slice': 'multiwan', 'attach_method': 'auto',
           'rule_priority': 100, 'force': false, 'metrics_textfile': '', 'netns_guard': true, 'rp_filter': 'loose',
           'mptcp': 'off'}) }}
"""

RETURN = r"""
_value:
  description: The state document (version, steering, policy, exclusions, uplinks in slot order, settings).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.netlb.multiwan.plugins.module_utils.state_store import StateError, document, role_settings


def balancer_state(plan, settings=None, role=None):
    if (settings is None) == (role is None):
        raise AnsibleFilterError("balancer_state: give exactly one of settings and role")
    try:
        return document(plan, dict(settings) if settings is not None else role_settings(plan, dict(role)))
    except StateError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):
    def filters(self):
        return {"balancer_state": balancer_state}
