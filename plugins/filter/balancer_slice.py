# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""balancer_slice: the role's systemd slice name, checked by the collection's schema
(module_utils/schema.py), the same rules as the rest of the inventory."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: balancer_slice
short_description: Checked systemd slice name of a balancer host
version_added: "0.1.0"
description:
  - Returns the name unchanged when it is empty or words of C([A-Za-z0-9_]) joined by single dashes
    (a systemd slice name without C(.slice)).
  - Fails otherwise, with a message naming the variable, e.g. C(balancer_slice).
options:
  _input:
    description: The slice name (C(balancer_slice)).
    type: str
    required: true
  field:
    description: Name of the variable, for the error message.
    type: str
    default: balancer_slice
"""

EXAMPLES = r"""
- name: Check the slice name before it becomes a unit name
  ansible.builtin.assert:
    that: (balancer_slice | netlb.multiwan.balancer_slice) == balancer_slice
    quiet: true
"""

RETURN = r"""
_value:
  description: The slice name, unchanged.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.netlb.multiwan.plugins.module_utils import schema


def balancer_slice(name, field="balancer_slice"):
    try:
        return schema.slice_name(name, field)
    except schema.SchemaError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):
    def filters(self):
        return {"balancer_slice": balancer_slice}
