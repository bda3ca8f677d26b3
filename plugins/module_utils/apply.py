# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One apply: a host's whole state document converged in phases, under the document's lock.

  check      every uplink's routing checked before the first change (the SSH guard, tables
             taken by someone else, a missing interface): a refused uplink changes nothing
  detach     the program from the attachments the recorded document has and the new one lacks
  retire     the VRFs and fwmark tables the recorded document has and the new one lacks
  routing    each extra uplink's VRF or fwmark table, as netlb.multiwan.vrf / fwmark_table
  document   the new document, with the drains an operator made on the host kept
  attach     the program on every attachment, as netlb.multiwan.cgroup_bpf_attach
  maps       the runtime maps, source rules, MPTCP endpoints and rp_filter from the document as written

``remove()`` undoes all of it (the role's ``balancer_state: absent``): detach, retire, maps
(rp_filter back as it was, MPTCP endpoints gone), document, for what the recorded document and, when given, the
planned one name (an uplink in the inventory that no run recorded is still removed).

netlb.multiwan.balancer_apply runs it for the role; the boot unit (netlb-multiwan-apply) runs
its routing and attach phases from the document on disk. Holding the lock throughout, a
``netlb-multiwan drain`` waits for the apply and then applies to what it wrote, and the
tracker never converges the maps from a half-applied host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.netlb.multiwan.plugins.module_utils import (attach, datapath, mptcp, mptcp_upgrade, state_store,
                                                                     steering)
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing as routing
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as model
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError

PHASES = ("withdraw", "detach", "retire", "routing", "document", "attach", "maps")
NOTHING = {"uplinks": [], "attachments": []}


class ApplyError(Exception):
    """A phase failed: *phase* says which, *field* the part of the document at fault."""

    def __init__(self, phase, message, field=None):
        self.phase, self.field = phase, field
        super(ApplyError, self).__init__("%s: %s" % (phase, message))


def routing_key(piece):
    """What identifies a VRF (its name) or an fwmark table (table and mark)."""
    kind, params = piece
    return (kind, params["name"]) if kind == "vrf" else (kind, params["table"], params["mark"])


def unique(items, key):
    seen, out = set(), []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
    return out


def routed(doc):
    """(slot, uplink, (kind, params)) of every uplink *doc* routes (a VRF, an fwmark table)."""
    provider = steering.of(doc or {})
    for slot, up in enumerate((doc or {}).get("uplinks", [])):
        piece = provider.routing(doc, up)
        if piece[0] is not None:
            yield slot, up, piece


def retired(recorded, doc):
    """(kind, params) of what *recorded* routed and *doc* no longer does: an uplink taken
    out of the inventory, renamed, moved to another table, or another steering."""
    planned = set(routing_key(piece) for _slot, _up, piece in routed(doc))
    provider = steering.of(recorded or {})
    return [(kind, provider.retirement(params)) for _slot, _up, (kind, params) in routed(recorded)
            if routing_key((kind, params)) not in planned]


def leaving(recorded, pieces):
    """Names of *recorded*'s uplinks whose routing *pieces* (retired's) take away."""
    keys = set(routing_key(piece) for piece in pieces)
    return [up["name"] for _slot, up, piece in routed(recorded) if routing_key(piece) in keys]


def dropped_attachments(recorded, doc):
    """The attachments of *recorded* that *doc* lacks (by cgroup and pin directory): a slice
    or cgroup taken out of the inventory keeps no program."""
    kept = set((a["cgroup"], a["pin_dir"]) for a in doc.get("attachments", []))
    return [a for a in (recorded or {}).get("attachments", []) if (a["cgroup"], a["pin_dir"]) not in kept]


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
        attacher = run_attacher("attach", host_factory(attach_params(doc, attachment)))
        actions += ["%s: %s" % (attachment["cgroup"], a) for a in attacher.actions]
        warnings += attacher.warnings
    if doc.get("mptcp") == "upgrade" or os.path.isdir(mptcp_upgrade.pin_base(doc)):
        try:
            actions += mptcp_upgrade.converge(doc, host_bpftool(host_factory, "attach"), check_mode)
        except mptcp_upgrade.UpgradeError as exc:
            raise ApplyError("attach", str(exc), field="mptcp")
    return actions, warnings


def host_bpftool(host_factory, phase):
    host = host_factory({})
    path = host.get_bin_path("bpftool")
    if not path:
        raise ApplyError(phase, "bpftool not found on the managed host")
    return Bpftool(host, path)


def run_attacher(phase, host):
    """cgroup_bpf_attach's engine for *host*'s params (state present or absent)."""
    attacher = attach.Attacher(host)
    try:
        attacher.prepare()
        attacher.read_state()
        if host.params["state"] == "present":
            attacher.present()
        else:
            attacher.absent()
    except attach.AttachError as exc:
        raise ApplyError(phase, "%s: %s" % (host.params["cgroup"], exc), field=exc.field)
    return attacher


class Apply(object):
    """The whole document *planned* converged on this host. ``host_factory(params)``
    gives the Attacher its runner (check mode included); ``actions`` maps each phase to
    what it did (or would do, in check mode)."""

    def __init__(self, planned, host_factory, path=state_store.DEFAULT_PATH, keep_drains=True, check_mode=False,
                 netlink=nl.Netlink, before_change=None):
        # remove() may go without a plan: the recorded document says what is there.
        self.planned = None if planned is None else state_store.validate(planned, "content")
        self.host_factory, self.path, self.netlink = host_factory, path, netlink
        self.keep_drains, self.check_mode = keep_drains, check_mode
        # Called once the document and every uplink's routing are checked, before the
        # first change (balancer_apply installs the role's files and units there).
        self.before_change = before_change
        self.actions = dict((phase, []) for phase in PHASES)
        self.warnings = []
        self.document_before = self.document_after = None

    @property
    def changed(self):
        return any(self.actions.values())

    def run(self):
        if self.planned is None:
            raise ApplyError("document", "no planned document to converge to")
        return self.locked(self.converge, make_dir=True)

    def remove(self):
        """Undo everything; returns the recorded document (None if there was none)."""
        return self.locked(self.teardown, make_dir=False)

    def locked(self, step, make_dir):
        """*step* under the document's lock. Without the document's directory (a new host, or
        one torn down) there is nothing to keep or to race with: it is made only to converge."""
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            if self.check_mode or not make_dir:
                return step()
            os.makedirs(directory, 0o755)
        with state_store.locked(self.path):
            return step()

    def read_recorded(self, consequence):
        try:
            return state_store.read(self.path)
        except state_store.StateError as exc:
            self.warnings.append("%s; %s" % (exc, consequence))
            return None

    def converge(self):
        # An unusable document is replaced whole: nothing of it can be kept or retired.
        recorded = self.read_recorded("it is replaced, with no drain kept and nothing retired")
        doc = state_store.keep_runtime(self.planned, recorded, self.keep_drains)
        with self.netlink() as link:
            self.check_routing(doc, link)
            if self.before_change:
                self.before_change()
            retiring = retired(recorded, doc)
            self.withdraw(recorded, leaving(recorded, retiring))
            self.detach(dropped_attachments(recorded, doc))
            self.retire_routing(retiring, link)
            self.route(doc, link)
        self.write_document(doc)
        self.attach(doc)
        self.converge_maps(doc)
        return doc

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
        before anything changed (one uplink must not be moved while the next is refused).
        MPTCP the host cannot have is refused here too."""
        reason = mptcp.check(doc)
        if reason:
            raise ApplyError("check", "mptcp %s: %s" % (mptcp.mode(doc), reason), field="mptcp")
        for i, up, (kind, params) in routed(doc):
            self.route_uplink(i, up, kind, params, link, check_mode=True)

    def teardown(self):
        recorded = self.read_recorded("only what the planned document names is removed")
        known = [d for d in (recorded, self.planned) if d]
        # Both name most pieces: each is undone once.
        self.detach(unique((a for d in known for a in d.get("attachments", [])),
                           key=lambda a: (a["cgroup"], a["pin_dir"])))
        with self.netlink() as link:
            self.retire_routing(unique((p for d in known for p in retired(d, NOTHING)), key=routing_key), link)
            self.remove_mptcp_paths(known[0] if known else {}, link)
        for doc in known:
            if os.path.isdir(mptcp_upgrade.pin_base(doc)):
                self.actions["detach"] += mptcp_upgrade.converge(dict(doc, mptcp="off"), None, self.check_mode)
        self.restore_rp_filter(known[0] if known else {})
        self.remove_document()
        return recorded

    def detach(self, attachments):
        for attachment in attachments:
            params = {"cgroup": attachment["cgroup"], "pin_dir": attachment["pin_dir"], "object": None,
                      "attach_types": [], "state": "absent", "attach_method": "auto"}
            attacher = run_attacher("detach", self.host_factory(params))
            self.actions["detach"] += ["%s: %s" % (attachment["cgroup"], a) for a in attacher.actions]
            self.warnings += attacher.warnings

    def remove_mptcp_paths(self, doc, link):
        try:
            self.actions["maps"] += mptcp.converge(dict(doc, mptcp="off"), [], link, check_mode=self.check_mode)
        except mptcp.MptcpError as exc:
            raise ApplyError("maps", str(exc), field="mptcp")

    def restore_rp_filter(self, doc):
        from ansible_collections.netlb.multiwan.plugins.module_utils import rp_filter
        try:
            self.actions["maps"] += rp_filter.converge(doc, present=False, check_mode=self.check_mode)
        except rp_filter.RpFilterError as exc:
            raise ApplyError("maps", str(exc), field="rp_filter")

    def remove_document(self):
        try:
            with open(self.path) as handle:
                self.document_before = handle.read()
        except (IOError, OSError):
            return
        self.actions["document"].append("remove %s" % self.path)
        if not self.check_mode:
            os.unlink(self.path)

    def withdraw(self, recorded, names):
        """Take the uplinks *names* out of the maps the recorded document runs, before their
        routing goes: a socket the program steers while their rules and tables are being
        removed would leave through the main table with their mark, or fail. The new
        document's maps (a phase later) no longer have them at all."""
        if not names or not recorded.get("attachments"):
            return
        from ansible_collections.netlb.multiwan.plugins.module_utils import cli

        out = dict(recorded, uplinks=[dict(up, drained=True) if up["name"] in names else up
                                      for up in recorded["uplinks"]],
                   attachments=[a for a in recorded["attachments"] if cli.maps_pinned(a)])
        try:
            changes = self.map_changes(out, routing=False)
        except ApplyError as exc:  # maps of another layout (an upgrade): the maps phase replaces them
            self.warnings.append("%s not taken out of the maps before their routing is removed: %s"
                                 % (", ".join(names), exc))
            return
        self.actions["withdraw"] += ["%s: %s" % (", ".join(names), change) for change in changes]

    def retire_routing(self, pieces, link):
        for kind, params in pieces:
            engine = routing.engine_for(kind, params, link, self.check_mode)
            try:
                engine.run()
            except (routing.RoutingError, nl.NetlinkError) as exc:
                raise ApplyError("retire", str(exc))
            self.actions["retire"] += engine.actions

    def route(self, doc, link):
        for i, up, (kind, params) in routed(doc):
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
        from ansible_collections.netlb.multiwan.plugins.module_utils import cli

        # In check mode an attachment made by this run has no maps yet to compare with.
        pinned = dict(doc, attachments=[a for a in doc.get("attachments", []) if cli.maps_pinned(a)])
        self.actions["maps"] += self.map_changes(pinned if self.check_mode else doc)

    def map_changes(self, doc, routing=True):
        from ansible_collections.netlb.multiwan.plugins.module_utils import cli, rp_filter

        host = self.host_factory({})
        bpftool = host.get_bin_path("bpftool")
        if not bpftool and doc.get("attachments"):
            raise ApplyError("maps", "bpftool not found on the managed host")
        try:
            return cli.converge_maps(doc, Bpftool(host, bpftool or "bpftool"), check_mode=self.check_mode,
                                     routing=routing)
        except rp_filter.RpFilterError as exc:
            raise ApplyError("maps", str(exc), field="rp_filter")
        except (BpftoolError, datapath.DatapathError, nl.NetlinkError, OSError) as exc:
            raise ApplyError("maps", str(exc))
