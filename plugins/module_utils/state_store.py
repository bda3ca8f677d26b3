# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state document of a balancer host: where it is, its lock, how it is built (from
the plan), checked, read and written, and what of it belongs to the host rather than to
the inventory. The only code that reads or writes it: the role (filter balancer_state,
module balancer_apply), status, netlb-multiwan, the boot unit and the tracker.

Everything that writes it (the role through netlb.multiwan.balancer_apply, the
netlb-multiwan command, the boot unit) takes the lock and writes atomically, so a
writer never undoes another's change: the role's new document keeps the drains an
operator made on the host, read under the same lock it writes under.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import json
import os

from ansible_collections.netlb.multiwan.plugins.module_utils.files import atomic_write

DEFAULT_PATH = "/etc/netlb-multiwan/balancer.json"
VERSION = 1
MANAGED_BY = "netlb.multiwan.balancer (Ansible); do not edit, re-run the role"

# What the role decides besides the plan (its variables, the host's facts), by type.
SETTINGS = {
    "ipv6": bool, "object": str, "attach_types": list, "attachments": list, "attach_method": str,
    "rule_priority": int, "force": bool, "metrics_textfile": (str, type(None)), "netns_guard": bool,
    "rp_filter": str, "state_dir": str, "mptcp": str,
}


class StateError(ValueError):
    """A document this engine cannot use: *field* names the part at fault."""

    def __init__(self, path, field, message):
        self.path, self.field, self.message = path, field, message
        super(StateError, self).__init__("%s: %s%s" % (path, field + " " if field else "", message))


def validate(doc, path="state document"):
    """The checks every reader relies on; the values themselves were checked by the
    plan that wrote them (plugin_utils/plan.py, module_utils/schema.py)."""
    if not isinstance(doc, dict):
        raise StateError(path, "", "is not a JSON object")
    if doc.get("version") != VERSION:
        raise StateError(path, "version", "is %r; this engine reads version %d" % (doc.get("version"), VERSION))
    for field in ("uplinks", "attachments"):
        entries = doc.get(field, [])
        if not (isinstance(entries, list) and all(isinstance(e, dict) for e in entries)):
            raise StateError(path, field, "must be a list of objects")
    for i, uplink in enumerate(doc.get("uplinks", [])):
        if not isinstance(uplink.get("name"), str):
            raise StateError(path, "uplinks[%d]" % i, "needs a name")
    for i, attachment in enumerate(doc.get("attachments", [])):
        if not isinstance(attachment.get("cgroup"), str) or not isinstance(attachment.get("pin_dir"), str):
            raise StateError(path, "attachments[%d]" % i, "needs a cgroup and a pin_dir")
    return doc


# The role's variables (balancer_<name>) the settings come from, by how each is read.
ROLE_VARIABLES = {
    "ipv6": "bool", "state_dir": "str", "cgroup": "str", "pin_dir": "str", "slice": "str", "attach_method": "str",
    "rule_priority": "int", "force": "bool", "metrics_textfile": "str", "netns_guard": "bool", "rp_filter": "str",
    "mptcp": "str",
}
_TRUE, _FALSE = ("true", "yes", "on", "1", "y", "t"), ("false", "no", "off", "0", "n", "f", "")


def _role_value(role, name, kind):
    value = role.get(name)
    field = "balancer_" + name
    if kind == "bool":  # as Jinja's | bool: -e balancer_ipv6=false is the string "false"
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if value is not None else ""
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise StateError("role", field, "must be a boolean, not %r" % (value,))
    if kind == "int":
        try:
            return int(value) if not isinstance(value, bool) else int("x")
        except (TypeError, ValueError):
            raise StateError("role", field, "must be an integer, not %r" % (value,))
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StateError("role", field, "must be a string, not %r" % (value,))
    return value


def role_settings(plan, role):
    """The document's settings from the role's variables (*role*: each name of ROLE_VARIABLES,
    without its balancer_ prefix) and the plan: the hooks (sendmsg where the steering picks an
    uplink's table by source address, IPv6 ones with ipv6), the attachments (the cgroup, and
    the slice below the root cgroup: systemd nests slices by their dashes, a-b.slice lives in
    a.slice/a-b.slice)."""
    missing = sorted(set(ROLE_VARIABLES) - set(role))
    if missing:
        raise StateError("role", "balancer_" + missing[0], "is missing")
    values = dict((name, _role_value(role, name, kind)) for name, kind in ROLE_VARIABLES.items())
    udp = bool(plan["needs"]["udp_source"])
    families = ["4", "6"] if values["ipv6"] else ["4"]
    attach_types = [hook + family for family in families for hook in ["connect"] + (["sendmsg"] if udp else [])]
    attachments = [{"cgroup": values["cgroup"], "pin_dir": values["pin_dir"]}]
    if values["slice"] and values["cgroup"] != "/":
        parts = values["slice"].split("-")
        attachments.append({"cgroup": "/".join("-".join(parts[:i + 1]) + ".slice" for i in range(len(parts))),
                            "pin_dir": values["pin_dir"] + "_slice", "slice": values["slice"] + ".slice"})
    return {
        "ipv6": values["ipv6"], "object": values["state_dir"] + "/multiwan.bpf.o", "attach_types": attach_types,
        "attachments": attachments, "attach_method": values["attach_method"],
        "rule_priority": values["rule_priority"], "force": values["force"],
        "metrics_textfile": values["metrics_textfile"] or None, "netns_guard": values["netns_guard"],
        "rp_filter": values["rp_filter"], "mptcp": values["mptcp"], "state_dir": values["state_dir"],
    }


def document(plan, settings):
    """The whole document of a host: its plan (balancer_plan) and the role's settings."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise StateError("state document", unknown[0], "is not a setting of the document")
    for key, kind in sorted(SETTINGS.items()):
        if key not in settings:
            raise StateError("state document", key, "is missing")
        value = settings[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise StateError("state document", key, "has the wrong type (%s)" % type(value).__name__)
    doc = dict(settings, version=VERSION, managed_by=MANAGED_BY, steering=plan["steering"],
               policy=plan["policy"], exclude=plan["exclude"], exclude_ports=plan["exclude_ports"],
               uplinks=plan["uplinks"])
    return validate(doc)


def read(path):
    """The document at *path*, checked; None when there is none (StateError when it
    cannot be used)."""
    try:
        with open(path) as handle:
            text = handle.read()
    except (IOError, OSError) as exc:
        if not os.path.exists(path):
            return None
        raise StateError(path, "", "cannot be read: %s" % (exc.strerror or exc))
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise StateError(path, "", "is not JSON: %s" % exc)
    return validate(doc, path)


@contextlib.contextmanager
def locked(path):
    """Hold the document's lock: a flock on its directory, which save()'s atomic
    rename leaves in place (a lock on the file would be on the old inode)."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def load(path):
    """The document at *path*, checked; StateError when it is missing or unusable."""
    doc = read(path)
    if doc is None:
        raise StateError(path, "", "is missing: the balancer role has not been applied to this host")
    return doc


def render(doc):
    """The role's layout (to_nice_json): sorted keys, two spaces, a final newline."""
    return json.dumps(doc, indent=2, sort_keys=True, separators=(",", ": ")) + "\n"


def save(path, doc):
    """Atomically: a boot unit reading it never sees half a document."""
    atomic_write(path, render(doc))


def keep_runtime(planned, current, keep_drains=True):
    """*planned* (the role's new document) with what the host decided since: each
    uplink's ``drained`` as *current* (the document on the host) has it, by name,
    when *keep_drains*; otherwise no uplink is drained."""
    drained = set()
    if keep_drains and isinstance(current, dict):
        drained = set(u.get("name") for u in current.get("uplinks") or [] if isinstance(u, dict) and u.get("drained"))
    uplinks = [dict(u, drained=u.get("name") in drained) for u in planned.get("uplinks", [])]
    return dict(planned, uplinks=uplinks)
