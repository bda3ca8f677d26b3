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
    description:
      - The interpreter the commands run with (the one the modules ran with has pyroute2).
      - Without it only the package is given; the commands are then written by
        M(netlb.multiwan.balancer_apply) (O(netlb.multiwan.balancer_apply#module:install.commands)) with the
        interpreter it runs under.
    type: str
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
import re

from ansible.errors import AnsibleFilterError

from ansible_collections.netlb.multiwan.plugins.module_utils.layout import COMMANDS, DEFAULT_LIB, PACKAGE, command_script

UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")


# "from <PACKAGE> import a, b as c" (parenthesised over lines too) and "from <PACKAGE>.x import y".
# A regex, not ast: the role runs this filter for every host at every run, and parsing the
# whole engine cost more controller CPU than the rest of the task (tests/unit/test_engine_files
# checks it against ast).
_IMPORT = re.compile(r"^[ \t]*from[ \t]+%s(?:\.(\w+))?[ \t]+import[ \t]+(\([^)]*\)|(?:[^\n\\]|\\\n)*)"
                     % re.escape(PACKAGE), re.M)


def imported_utils(name, utils=UTILS):
    """The collection's module_utils that module_utils *name* imports, anywhere in it
    (a function's late import too)."""
    with open(os.path.join(utils, name + ".py")) as handle:
        source = handle.read()
    names = set()
    for submodule, imported in _IMPORT.findall(source):
        if submodule:
            names.add(submodule)
            continue
        for item in re.sub(r"#[^\n]*", "", imported).strip("()").replace("\\\n", " ").split(","):
            words = item.split()  # "name" or "name as alias"
            if words:
                names.add(words[0])
    return names


def closure(names, utils=UTILS):
    """*names* and every module_utils they import, transitively, sorted."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_utils(name, utils))
    return sorted(seen)


def balancer_engine(commands, python=None, lib=DEFAULT_LIB):
    if not isinstance(commands, dict):
        raise AnsibleFilterError("balancer_engine: expects {command: path}, got %s" % type(commands).__name__)
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown:
        raise AnsibleFilterError("balancer_engine: unknown command %s (known: %s)"
                                 % (", ".join(unknown), ", ".join(sorted(COMMANDS))))
    # Without python the commands are balancer_apply's to write (option install), with the interpreter it runs under.
    files = [{"path": path, "mode": "0755", "content": command_script(python, lib, *COMMANDS[name])}
             for name, path in sorted(commands.items()) if python]
    # The engine is one package on every host: every command's imports, whichever are installed.
    package_dir = os.path.join(lib, *PACKAGE.split("."))
    for name in closure(module for module, _summary in COMMANDS.values()):
        with open(os.path.join(UTILS, name + ".py")) as handle:
            files.append({"path": os.path.join(package_dir, name + ".py"), "content": handle.read()})
    return files


class FilterModule(object):
    def filters(self):
        return {"balancer_engine": balancer_engine}
