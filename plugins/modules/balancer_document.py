#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: balancer_document
short_description: Write a balancer host's state document, keeping what was decided on the host
version_added: "0.2.0"
description:
  - Writes the state document of the C(netlb.multiwan.balancer) role (what the boot unit applies,
    what the tracker, the C(netlb-multiwan) command and status read) from the document the role
    planned.
  - The drains an operator made on the host (C(netlb-multiwan drain NAME)) are kept, read from the
    document on the host under the same lock the command, the boot unit and the tracker take, at the
    moment of writing; so a drain made while a role run is in progress is not undone by it.
  - Writes nothing when the document on the host is already that one; the file is replaced
    atomically.
author:
  - netlb.multiwan contributors (@netlb)
options:
  content:
    description:
      - The planned document, as JSON text or as a dict (the role renders C(templates/balancer.json.j2);
        ansible-core before 2.19 turns a template that looks like JSON into a dict).
      - Its uplinks' C(drained) flags are replaced by the host's (see O(keep_drains)).
    type: raw
    required: true
  path:
    description: Where the document lives on the host.
    type: path
    default: /etc/netlb-multiwan/balancer.json
  keep_drains:
    description:
      - V(true) keeps each uplink drained that the document on the host has drained (matched by
        name); V(false) undrains every uplink.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The document before and after.
  platform:
    platforms: posix
seealso:
  - module: netlb.multiwan.balancer_maps
  - module: netlb.multiwan.balancer_info
"""

EXAMPLES = r"""
- name: Write the state document the role planned, keeping operator drains
  netlb.multiwan.balancer_document:
    content: "{{ lookup('ansible.builtin.template', 'balancer.json.j2') }}"
"""

RETURN = r"""
drained:
  description: The uplinks the written document has drained (kept from the host).
  returned: always
  type: list
  elements: str
  sample: [wifi]
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.netlb.multiwan.plugins.module_utils import state_store


def converge(module, planned, path):
    """(changed, drained, before text, after text), under the document's lock."""
    try:
        with open(path) as handle:
            before = handle.read()
    except (IOError, OSError):
        if os.path.exists(path):
            raise
        before = None
    try:
        current = json.loads(before) if before is not None else None
    except ValueError:
        current = None  # replaced by the planned document; nothing of it can be kept
        module.warn("%s was not JSON: replaced, with no drain kept" % path)
    doc = state_store.keep_runtime(planned, current, module.params["keep_drains"])
    after = state_store.render(doc)
    drained = [u["name"] for u in doc["uplinks"] if u["drained"]]
    if after != before and not module.check_mode:
        state_store.save(path, doc)
    return after != before, drained, before, after


def main():
    module = AnsibleModule(
        argument_spec=dict(
            content=dict(type="raw", required=True),
            path=dict(type="path", default=state_store.DEFAULT_PATH),
            keep_drains=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    path = module.params["path"]
    planned = module.params["content"]
    if not isinstance(planned, dict):
        try:
            planned = json.loads(to_native(planned))
        except ValueError as exc:
            module.fail_json(msg="content: not JSON: %s" % to_native(exc), field="content")
    if not isinstance(planned, dict) or not isinstance(planned.get("uplinks"), list):
        module.fail_json(msg="content: not a balancer state document (an object with a list of uplinks)",
                         field="content")
    directory = os.path.dirname(path)
    try:
        if not os.path.isdir(directory) and not module.check_mode:
            os.makedirs(directory, 0o755)
        if os.path.isdir(directory):
            with state_store.locked(path):
                changed, drained, before, after = converge(module, planned, path)
        else:  # check mode on a new host: nothing there to keep, or to race with
            changed, drained, before, after = converge(module, planned, path)
    except (IOError, OSError) as exc:
        module.fail_json(msg="path: cannot write %s: %s" % (path, to_native(exc)), field="path")
    result = dict(changed=changed, drained=drained)
    if module._diff:
        result["diff"] = {"before_header": path if before is not None else "%s (absent)" % path,
                          "after_header": path, "before": before or "", "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
