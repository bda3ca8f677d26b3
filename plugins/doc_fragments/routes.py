# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The routes option of netlb.multiwan.vrf and netlb.multiwan.fwmark_table
    # (argument spec: module_utils/vrf_model.ROUTES_ARGUMENT_SPEC).
    DOCUMENTATION = r"""
options:
  routes:
    description:
      - Routes to keep in the uplink's table, in addition to the link routes of its interface(s).
      - A gateway must lie in a link route of the table (a prefix of the uplink's interface, or a
        route of this list without gateway).
    type: list
    elements: dict
    default: []
    suboptions:
      dst:
        description: Destination prefix in CIDR notation, or C(default).
        type: str
        default: default
      gateway:
        description: Next-hop address. Its family decides the family of a C(default) route.
        type: str
      interface:
        description: Output interface; must be one of the uplink's interfaces.
        type: str
      scope:
        description: Route scope. Defaults to C(link) for a route with only an interface, else C(global).
        type: str
        choices: [global, link, host, site]
      metric:
        description: Route metric (priority), 0 to 4294967295.
        type: int
      type:
        description: Route type.
        type: str
        choices: [unicast, unreachable, blackhole, prohibit]
        default: unicast
"""
