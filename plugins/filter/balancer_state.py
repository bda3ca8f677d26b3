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
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: The document of this host
  ansible.builtin.set_fact:
    balancer_planned_document: "{{ _balancer_plan | netlb.multiwan.balancer_state(settings) }}"
"""

RETURN = r"""
_value:
  description: The state document (version, steering, policy, exclusions, uplinks in slot order, settings).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.netlb.multiwan.plugins.module_utils.state_store import StateError, document


def balancer_state(plan, settings):
    try:
        return document(plan, dict(settings))
    except StateError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):
    def filters(self):
        return {"balancer_state": balancer_state}
