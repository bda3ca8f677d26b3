# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine the role installs on a host: its commands, and the collection's module_utils
they import (followed through every import, not a list kept by hand)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: balancer_engine
short_description: The files of the balancer's engine on a host, for M(netlb.multiwan.balancer_apply) or M(netlb.multiwan.file_set)
version_added: "0.2.0"
description:
  - The host runs the code the modules run (the boot unit, the tracker, C(netlb-multiwan) and the status
    command have no controller to ask). This filter gives the files that install it as a package of the
    collection's C(module_utils) under O(lib), with one small executable per command.
  - Which C(module_utils) are installed follows the imports of the commands' modules, transitively, so a
    new import reaches the host with the code that needs it.
  - "Commands: C(netlb-multiwan) (runtime control), C(netlb-multiwan-status), C(netlb-multiwan-apply)
    (the boot units' re-apply) and C(netlb-multiwan-track) (the health tracker)."
options:
  _input:
    description: The commands to install, each command's name mapped to its path on the host.
    type: dict
    required: true
  python:
    description: The interpreter the commands run with (the one the modules ran with has pyroute2).
    type: str
    required: true
  lib:
    description: The directory the package is installed under (put on the commands' C(sys.path)).
    type: str
    default: /usr/local/lib/netlb-multiwan
"""

EXAMPLES = r"""
- name: Install the runtime command and the status command with the engine
  netlb.multiwan.file_set:
    files: >-
      {{ {'netlb-multiwan': '/usr/local/sbin/netlb-multiwan',
          'netlb-multiwan-status': '/usr/local/sbin/netlb-multiwan-status'}
         | netlb.multiwan.balancer_engine(python='/usr/bin/python3') }}
"""

RETURN = r"""
_value:
  description:
    - Entries for the O(netlb.multiwan.balancer_apply#module:files) of M(netlb.multiwan.balancer_apply) or for
      M(netlb.multiwan.file_set) (path, content, mode), the commands first.
  type: list
  elements: dict
"""

import os

from ansible.errors import AnsibleFilterError

from ansible_collections.netlb.multiwan.plugins.module_utils.layout import (COMMANDS, DEFAULT_LIB, command_script,
                                                                            engine_files, imports_of)
from ansible_collections.netlb.multiwan.plugins.module_utils.layout import closure as layout_closure

UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")


def _source(name, utils=UTILS):
    with open(os.path.join(utils, name + ".py")) as handle:
        return handle.read()


def imported_utils(name, utils=UTILS):
    """The collection's module_utils that module_utils *name* imports, anywhere in it
    (a function's late import too)."""
    return imports_of(_source(name, utils))


def closure(names, utils=UTILS):
    """*names* and every module_utils they import, transitively, sorted."""
    return layout_closure(names, lambda name: _source(name, utils))


def balancer_engine(commands, python, lib=DEFAULT_LIB):
    if not isinstance(commands, dict):
        raise AnsibleFilterError("balancer_engine: expects {command: path}, got %s" % type(commands).__name__)
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown:
        raise AnsibleFilterError("balancer_engine: unknown command %s (known: %s)"
                                 % (", ".join(unknown), ", ".join(sorted(COMMANDS))))
    files = [{"path": path, "mode": "0755", "content": command_script(python, lib, *COMMANDS[name])}
             for name, path in sorted(commands.items())]
    # The engine is one package on every host: every command's imports, whichever are installed.
    return files + engine_files(lib, _source)


class FilterModule(object):
    def filters(self):
        return {"balancer_engine": balancer_engine}
