# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One apply: a host's whole state document converged in phases, under the document's lock.

  check      every uplink's routing checked before the first change (the SSH guard, tables
             taken by someone else, a missing interface): a refused uplink changes nothing
  retire     the VRFs and fwmark tables the recorded document has and the new one lacks
  routing    each extra uplink's VRF or fwmark table, as netlb.multiwan.vrf / fwmark_table
  document   the new document, with the drains an operator made on the host kept
  attach     the program on every attachment, as netlb.multiwan.cgroup_bpf_attach
  maps       the runtime maps, source rules and rp_filter from the document as written

netlb.multiwan.balancer_apply runs it for the role; the boot unit (netlb-multiwan-apply) runs
its routing and attach phases from the document on disk. Holding the lock throughout, a
``netlb-multiwan drain`` waits for the apply and then applies to what it wrote, and the
tracker never converges the maps from a half-applied host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.netlb.multiwan.plugins.module_utils import attach, datapath, state_store
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing as routing
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as model
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError

PHASES = ("retire", "routing", "document", "attach", "maps")


class ApplyError(Exception):
    """A phase failed: *phase* says which, *field* the part of the document at fault."""

    def __init__(self, phase, message, field=None):
        self.phase, self.field = phase, field
        super(ApplyError, self).__init__("%s: %s" % (phase, message))


def retired(recorded, doc):
    """(kind, params) of what *recorded* routed and *doc* no longer does: an uplink taken
    out of the inventory, renamed, moved to another table, or another steering."""
    planned = set()
    for up in doc.get("uplinks", []):
        kind, params = routing.uplink_params(doc, up)
        if kind == "vrf":
            planned.add(("vrf", params["name"]))
        elif kind == "fwmark":
            planned.add(("fwmark", params["table"], params["mark"]))
    out = []
    for up in (recorded or {}).get("uplinks", []):
        kind, params = routing.uplink_params(recorded, up)
        if kind == "vrf" and ("vrf", params["name"]) not in planned:
            # By name alone, as the vrf module's state=absent: another table now is still ours.
            out.append((kind, dict(params, state="absent", table=None, interfaces=[], routes=[])))
        elif kind == "fwmark" and ("fwmark", params["table"], params["mark"]) not in planned:
            out.append((kind, dict(params, state="absent", routes=[])))
    return out


def attach_params(doc, attachment):
    """netlb.multiwan.cgroup_bpf_attach's options for one attachment of *doc*. A slice's
    cgroup is systemd's to make (the role starts the slice first)."""
    return {"cgroup": attachment["cgroup"], "object": doc["object"], "pin_dir": attachment["pin_dir"],
            "attach_types": doc["attach_types"], "shared_maps": list(datapath.Maps.NAMES),
            "create_cgroup": not attachment.get("slice"), "state": "present",
            "attach_method": doc.get("attach_method", "auto")}


def attach_all(doc, host_factory, check_mode=False):
    """Every attachment of *doc*: the actions and warnings, as "cgroup: action".
    *host_factory(params)*: what the Attacher runs through (an AnsibleModule's
    stand-in, cli.Host)."""
    actions, warnings = [], []
    for attachment in doc.get("attachments", []):
        if check_mode and not os.path.isfile(doc["object"]):
            # A first run in check mode: the role has not installed the program yet.
            actions.append("%s: load %s and attach it" % (attachment["cgroup"], doc["object"]))
            continue
        attacher = attach.Attacher(host_factory(attach_params(doc, attachment)))
        try:
            attacher.prepare()
            attacher.read_state()
            attacher.present()
        except attach.AttachError as exc:
            raise ApplyError("attach", "%s: %s" % (attachment["cgroup"], exc), field=exc.field)
        actions += ["%s: %s" % (attachment["cgroup"], a) for a in attacher.actions]
        warnings += attacher.warnings
    return actions, warnings


class Apply(object):
    """The whole document *planned* converged on this host. ``host_factory(params)``
    gives the Attacher its runner (check mode included); ``actions`` maps each phase to
    what it did (or would do, in check mode)."""

    def __init__(self, planned, host_factory, path=state_store.DEFAULT_PATH, keep_drains=True, check_mode=False,
                 netlink=nl.Netlink):
        self.planned = state_store.validate(planned, "content")
        self.host_factory, self.path, self.netlink = host_factory, path, netlink
        self.keep_drains, self.check_mode = keep_drains, check_mode
        self.actions = dict((phase, []) for phase in PHASES)
        self.warnings = []
        self.document_before = self.document_after = None

    @property
    def changed(self):
        return any(self.actions.values())

    def run(self):
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            if self.check_mode:  # a new host: nothing on it to keep, or to race with
                return self.converge()
            os.makedirs(directory, 0o755)
        with state_store.locked(self.path):
            return self.converge()

    def converge(self):
        try:
            recorded = state_store.read(self.path)
        except state_store.StateError as exc:
            recorded = None  # replaced whole: nothing of it can be kept or retired
            self.warnings.append("%s; it is replaced, with no drain kept and nothing retired" % exc)
        doc = state_store.keep_runtime(self.planned, recorded, self.keep_drains)
        with self.netlink() as link:
            self.check_routing(doc, link)
            self.retire(recorded, doc, link)
            self.route(doc, link)
        self.write_document(doc)
        self.attach(doc)
        self.converge_maps(doc)
        return doc

    def routed_uplinks(self, doc):
        for i, up in enumerate(doc["uplinks"]):
            kind, params = routing.uplink_params(doc, up)
            if kind is not None:
                yield i, up, kind, params

    def route_uplink(self, i, up, kind, params, link, check_mode):
        try:
            engine = routing.engine_for(kind, params, link, check_mode)
            engine.run()
        except (routing.RoutingError, model.ValidationError) as exc:
            raise ApplyError("routing", "uplink %s (%s): %s" % (up["name"], up["interface"], exc),
                             field="uplinks[%d]" % i)
        except nl.NetlinkError as exc:
            raise ApplyError("routing", "uplink %s: netlink: %s; the changes to this uplink were rolled back"
                             % (up["name"], exc))
        return engine

    def check_routing(self, doc, link):
        """Every uplink's engine in check mode first: the first refusal stops the run
        before anything changed (one uplink must not be moved while the next is refused)."""
        for i, up, kind, params in self.routed_uplinks(doc):
            self.route_uplink(i, up, kind, params, link, check_mode=True)

    def retire(self, recorded, doc, link):
        for kind, params in retired(recorded, doc):
            engine = routing.engine_for(kind, params, link, self.check_mode)
            try:
                engine.run()
            except (routing.RoutingError, nl.NetlinkError) as exc:
                raise ApplyError("retire", str(exc))
            self.actions["retire"] += engine.actions

    def route(self, doc, link):
        for i, up, kind, params in self.routed_uplinks(doc):
            engine = self.route_uplink(i, up, kind, params, link, self.check_mode)
            self.actions["routing"] += ["%s: %s" % (up["name"], a) for a in engine.actions]
            self.warnings += getattr(engine, "warnings", [])

    def write_document(self, doc):
        try:
            with open(self.path) as handle:
                self.document_before = handle.read()
        except (IOError, OSError):
            self.document_before = None
        self.document_after = state_store.render(doc)
        if self.document_after != self.document_before:
            self.actions["document"].append("write %s" % self.path)
            if not self.check_mode:
                state_store.save(self.path, doc)

    def attach(self, doc):
        actions, warnings = attach_all(doc, self.host_factory, self.check_mode)
        self.actions["attach"] += actions
        self.warnings += warnings

    def converge_maps(self, doc):
        from ansible_collections.netlb.multiwan.plugins.module_utils import cli, rp_filter

        host = self.host_factory({})
        bpftool = host.get_bin_path("bpftool")
        if not bpftool and doc.get("attachments"):
            raise ApplyError("maps", "bpftool not found on the managed host")
        # In check mode an attachment made by this run has no maps yet to compare with.
        pinned = dict(doc, attachments=[a for a in doc.get("attachments", []) if cli.maps_pinned(a)])
        try:
            self.actions["maps"] += cli.converge_maps(pinned if self.check_mode else doc, Bpftool(host, bpftool or "bpftool"),
                                                      check_mode=self.check_mode)
        except rp_filter.RpFilterError as exc:
            raise ApplyError("maps", str(exc), field="rp_filter")
        except (BpftoolError, datapath.DatapathError, nl.NetlinkError, OSError) as exc:
            raise ApplyError("maps", str(exc))
