# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load a BPF object, pin it and attach its programs to a cgroup v2: the engine
of netlb.multiwan.cgroup_bpf_attach, also run at boot without Ansible.

``Attacher(host)`` takes an AnsibleModule, or anything with the same
``params``, ``check_mode``, ``get_bin_path`` and ``run_command``
(module_utils/cli.Host).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import platform
import re
import shutil

from ansible_collections.netlb.multiwan.plugins.module_utils import bpf_link
from ansible_collections.netlb.multiwan.plugins.module_utils import bpf_object
from ansible_collections.netlb.multiwan.plugins.module_utils import cgroup as cg
from ansible_collections.netlb.multiwan.plugins.module_utils import runner
from ansible_collections.netlb.multiwan.plugins.module_utils.kernel_support import MIN_KERNEL, kernel_version
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError
from ansible_collections.netlb.multiwan.plugins.module_utils.files import atomic_write

STATE_FILE = "/run/netlb-multiwan/cgroup_bpf_attach.json"
DIGEST_LEN = 16  # hex characters naming a pin subdirectory
DIGEST_DIR_RE = re.compile(r"[0-9a-f]{%d}" % DIGEST_LEN)
LINKS_DIR = "links"  # <pin_dir>/links/<hook>_<link id>: the cgroup bpf_links this module made
ATTACH_METHODS = ("auto", "link", "legacy")


class AttachError(Exception):
    def __init__(self, field, message):
        super(AttachError, self).__init__("%s: %s" % (field, message) if field else message)
        self.field = field


def load_state():
    try:
        with open(STATE_FILE) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return {}


def save_state(state):
    if not state:  # nothing to remember: leave nothing behind in /run
        try:
            os.unlink(STATE_FILE)
        except OSError:
            pass  # absent already
        try:
            os.rmdir(os.path.dirname(STATE_FILE))
        except OSError:
            pass  # absent, or it holds other files
        return
    atomic_write(STATE_FILE, json.dumps(state, indent=1, sort_keys=True), make_dir=True)


def pinned_prog_id(path, bpftool):
    """The id of the program pinned at *path*: through bpf(2), or bpftool where that cannot
    be done (a test's tree, an architecture without the syscall number)."""
    try:
        with bpf_link.pinned(path) as fd:
            return bpf_link.prog_id(fd)
    except (bpf_link.LinkError, OSError):
        return bpftool.prog_id(path)


class Attacher(object):
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.actions = []
        self.warnings = []

    # -- discovery and validation (nothing changes here) ----------------------

    def prepare(self):
        if kernel_version() < MIN_KERNEL:
            raise AttachError(None, "kernel %s is older than 5.8, which cgroup sock_addr programs with "
                                    "bpf_setsockopt need" % platform.release())
        self.mount = cg.cgroup2_mount()
        if self.mount is None:
            raise AttachError("cgroup", "no cgroup2 file system is mounted (see /proc/mounts); mount one, "
                                        "e.g. 'mount -t cgroup2 none /sys/fs/cgroup'")
        try:
            self.cgroup = cg.resolve_cgroup(self.p["cgroup"], self.mount)
        except cg.CgroupError as exc:
            raise AttachError(exc.field, str(exc).split(": ", 1)[1])
        bpftool = self.module.get_bin_path("bpftool") or shutil.which("bpftool", path="/usr/sbin:/sbin")
        if not bpftool:
            raise AttachError(None, "bpftool not found on the managed host; install it (Debian/Ubuntu: "
                                    "bpftool or linux-tools-$(uname -r); RHEL/Fedora: bpftool)")
        self.bpftool = Bpftool(self.module, bpftool)

        self.method = self.p.get("attach_method") or "auto"
        if self.method not in ATTACH_METHODS:
            raise AttachError("attach_method", "must be one of %s, not %r" % (", ".join(ATTACH_METHODS), self.method))
        self.pin_dir = os.path.normpath(self.p["pin_dir"])
        self.links_dir = os.path.join(self.pin_dir, LINKS_DIR)
        if "." in os.path.basename(self.pin_dir):
            raise AttachError("pin_dir", "bpffs refuses names with a dot (%s)" % self.pin_dir)
        self.bpffs = cg.mount_of(self.pin_dir, "bpf")
        self.need_bpffs_mount = False
        if self.bpffs is None:
            if self.pin_dir.startswith("/sys/fs/bpf/"):
                self.need_bpffs_mount = True
            else:
                raise AttachError("pin_dir", "%s is not on a bpf file system (mount bpffs there, or use a path "
                                             "under /sys/fs/bpf)" % self.pin_dir)

        self.want_hooks = {}
        if self.p["state"] == "present":
            obj = self.p["object"]
            if not obj:
                raise AttachError("object", "is required when state=present")
            if not os.path.isfile(obj):
                raise AttachError("object", "%s does not exist on the managed host" % obj)
            try:
                hooks = bpf_object.hooks(obj)
            except bpf_object.ObjectError as exc:
                raise AttachError("object", "%s is not a BPF object: %s" % (obj, exc))
            if not hooks:
                raise AttachError("object", "%s has no program in a cgroup section (e.g. SEC(\"cgroup/connect4\"))"
                                  % obj)
            if self.p["attach_types"]:
                for i, name in enumerate(self.p["attach_types"]):
                    short = bpf_object.short_attach_type(name)
                    if short not in bpf_object.ATTACH_TYPES:
                        raise AttachError("attach_types[%d]" % i, "unknown attach type %r (known: %s)"
                                          % (name, ", ".join(bpf_object.ATTACH_TYPES)))
                    if short not in hooks:
                        raise AttachError("attach_types[%d]" % i, "%s has no program for %s (it has: %s)"
                                          % (obj, short, ", ".join(sorted(hooks))))
                    self.want_hooks[short] = hooks[short]
            else:
                self.want_hooks = hooks
            self.digest = bpf_object.digest(obj)
            self.pin_path = os.path.join(self.pin_dir, self.digest[:DIGEST_LEN])

    def pinned_objects(self):
        """{digest prefix: {program name: prog id}} of the objects pinned in pin_dir."""
        found = {}
        if self.need_bpffs_mount or not os.path.isdir(self.pin_dir):
            return found
        for entry in sorted(os.listdir(self.pin_dir)):
            path = os.path.join(self.pin_dir, entry)
            if not DIGEST_DIR_RE.fullmatch(entry) or not os.path.isdir(path):
                continue
            progs = {}
            for name in os.listdir(path):
                if name == "maps":
                    continue
                try:
                    progs[name] = pinned_prog_id(os.path.join(path, name), self.bpftool)
                except BpftoolError:
                    continue
            found[entry] = progs
        return found

    def pinned_links(self):
        """[{path, id, prog_id, attach_type, attached}] of the bpf_links pinned in pin_dir/links
        (named <hook>_<link id>); attached: the link still holds this cgroup (not detached, the
        cgroup not recreated since)."""
        found = []
        if self.need_bpffs_mount or not os.path.isdir(self.links_dir):
            return found
        here = bpf_link.cgroup_id(self.cgroup) if os.path.isdir(self.cgroup) else None
        for name in sorted(os.listdir(self.links_dir)):
            path = os.path.join(self.links_dir, name)
            try:
                with bpf_link.pinned(path) as fd:
                    info = bpf_link.link_info(fd)
            except (bpf_link.LinkError, OSError):
                info = None
            if info is None:
                found.append({"path": path, "id": None, "prog_id": None, "attach_type": None, "attached": False})
            else:
                found.append(dict(info, path=path, attached=info["cgroup_id"] == here))
        return found

    def attached(self):
        if not os.path.isdir(self.cgroup):
            return []
        return self.bpftool.cgroup_programs(self.cgroup)

    def read_state(self):
        self.pinned = self.pinned_objects()
        ours = {}
        for key, progs in self.pinned.items():
            for name, prog_id in progs.items():
                ours[prog_id] = (key, name)
        self.ours = ours
        self.links = self.pinned_links()
        by_prog = dict(((link["attach_type"], link["prog_id"]), link) for link in self.links
                       if link["attached"] and link["prog_id"] in ours)
        self.ours_attached = [dict(p, pin=ours[p["id"]][0], link=by_prog.get((p["attach_type"], p["id"])))
                              for p in self.attached() if p["id"] in ours]
        return {
            "cgroup": self.cgroup,
            "exists": os.path.isdir(self.cgroup),
            "objects": sorted(self.pinned),
            "hooks": sorted("%s: %s (object %s)" % (p["attach_type"], p["name"], p["pin"])
                            for p in self.ours_attached),
        }

    # -- changes ---------------------------------------------------------------

    def present(self):
        key = self.digest[:DIGEST_LEN]
        plan_load = key not in self.pinned
        attached_new = set(p["attach_type"] for p in self.ours_attached if p["pin"] == key)
        to_attach = [h for h in sorted(self.want_hooks) if h not in attached_new]
        # A hook whose link holds an older program of ours is swapped in place.
        to_update = {}
        if self.method != "legacy":
            for prog in self.ours_attached:
                if prog["link"] and prog["attach_type"] in to_attach:
                    to_update.setdefault(prog["attach_type"], prog["link"])
        updated = set(link["path"] for link in to_update.values())
        to_detach = [p for p in self.ours_attached
                     if (p["pin"] != key or p["attach_type"] not in self.want_hooks)
                     and not (p["link"] and p["link"]["path"] in updated)]
        # Pins of links that hold nothing of ours here (detached, or the cgroup was recreated).
        stale_links = [link for link in self.links
                       if not (link["attached"] and link["prog_id"] in self.ours)]
        stale = [k for k in self.pinned if k != key]

        if self.need_bpffs_mount:
            self.actions.append("mount bpffs at /sys/fs/bpf")
        if not os.path.isdir(self.cgroup):
            if not self.p["create_cgroup"]:
                raise AttachError("cgroup", "%s does not exist and create_cgroup is false" % self.cgroup)
            self.actions.append("create cgroup %s" % self.cgroup)
        if plan_load:
            self.actions.append("load %s into %s" % (self.p["object"], self.pin_path))
        for hook in to_attach:
            if hook in to_update:
                self.actions.append("replace the program of bpf_link %s at %s with %s, in place"
                                    % (to_update[hook]["id"], hook, self.want_hooks[hook]))
            else:
                self.actions.append("attach %s at %s" % (self.want_hooks[hook], hook))
        for prog in to_detach:
            self.actions.append("detach %s (id %s, object %s) from %s"
                                % (prog["name"], prog["id"], prog["pin"], prog["attach_type"]))
        for link in stale_links:
            self.actions.append("remove bpf_link %s" % link["path"])
        for k in stale:
            self.actions.append("unpin object %s" % k)
        after = {
            "cgroup": self.cgroup,
            "exists": True,
            "objects": [key],
            "hooks": sorted("%s: %s (object %s)" % (h, n, key) for h, n in self.want_hooks.items()),
        }
        if self.module.check_mode or not self.actions:
            return after

        state = load_state()
        if self.need_bpffs_mount:
            self.run_cmd(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"])
        # Load before anything else changes: a verifier rejection must leave
        # the host as it was (no cgroup, no pin directory).
        if plan_load:
            made_pin_dir = not os.path.isdir(self.pin_dir)
            os.makedirs(self.pin_dir, exist_ok=True)
            shared_dir = os.path.join(self.pin_dir, "maps")
            reuse = dict((name, os.path.join(shared_dir, name)) for name in self.p["shared_maps"]
                         if os.path.exists(os.path.join(shared_dir, name)))

            def undo_load():
                shutil.rmtree(self.pin_path, ignore_errors=True)
                if made_pin_dir:
                    shutil.rmtree(self.pin_dir, ignore_errors=True)

            try:
                reshaped = self.reshaped_maps(reuse)
                for name in reshaped:
                    del reuse[name]
                self.bpftool.loadall(self.p["object"], self.pin_path, reuse=reuse)
                lacking = [n for n in self.p["shared_maps"]
                           if n not in reuse and not os.path.exists(os.path.join(self.pin_path, "maps", n))]
                if lacking:
                    undo_load()
                    raise AttachError("shared_maps", "%s has no map %s" % (self.p["object"], ", ".join(lacking)))
                for name in self.p["shared_maps"]:
                    if name not in reuse:
                        os.makedirs(shared_dir, exist_ok=True)
                        if name in reshaped:  # the old program keeps its map until it is replaced
                            os.unlink(os.path.join(shared_dir, name))
                        self.bpftool.pin_map(os.path.join(self.pin_path, "maps", name), os.path.join(shared_dir, name))
            except BpftoolError as exc:
                undo_load()
                missing = re.search(r"unable to find map '([^']+)'", exc.last_lines())
                if missing:
                    raise AttachError("shared_maps", "%s has no map %s" % (self.p["object"], missing.group(1)))
                raise AttachError("object", "the kernel refused to load %s (verifier or loader):\n%s"
                                  % (self.p["object"], exc.last_lines()))
        made_cgroup = False
        if not os.path.isdir(self.cgroup):
            os.makedirs(self.cgroup)
            made_cgroup = True
            state.setdefault(self.cgroup, {})["created_cgroup"] = True
            save_state(state)
        # Gapless: a link is updated in place (one program per socket, always);
        # otherwise the new program is attached (multi) before the old one goes.
        undo = []
        try:
            for hook in to_attach:
                undo.append(self.attach_hook(hook, to_update.get(hook)))
        except (BpftoolError, bpf_link.LinkError, OSError) as exc:
            for step in reversed(undo):
                step()
            if plan_load:
                shutil.rmtree(self.pin_path, ignore_errors=True)
            if made_cgroup:
                os.rmdir(self.cgroup)
                state.pop(self.cgroup, None)
                save_state(state)
            raise AttachError(None, "attaching at %s failed: %s (a program attached there without the "
                                    "'multi' flag blocks others); nothing of this run is left attached"
                              % (self.cgroup, getattr(exc, "detail", exc)))
        for prog in to_detach:
            self.detach_prog(prog)
        for link in stale_links:
            self.remove_link(link["path"])
        for k in stale:
            shutil.rmtree(os.path.join(self.pin_dir, k))
        return after

    def reshaped_maps(self, reuse):
        """The shared maps of *reuse* whose shape the new object changed (a new layout of
        the program's tables): those get a new map, not the pinned one. Told by loading
        the object once with maps of its own (a scratch pin directory, removed)."""
        if not reuse:
            return []
        scratch = self.pin_path + "_shape"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            self.bpftool.loadall(self.p["object"], scratch)
            return sorted(name for name, path in reuse.items()
                          if self.bpftool.map_shape(os.path.join(scratch, "maps", name)) != self.bpftool.map_shape(path))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def attach_hook(self, hook, link):
        """Attach the new program at hook; returns what undoes it."""
        prog_path = os.path.join(self.pin_path, self.want_hooks[hook])
        if link:
            with bpf_link.pinned(link["path"]) as link_fd, bpf_link.pinned(prog_path) as new_fd:
                old_path = self.prog_path(link["prog_id"])
                with bpf_link.pinned(old_path) as old_fd:
                    bpf_link.link_update(link_fd, new_fd, old_fd)

            def undo_update():
                with bpf_link.pinned(link["path"]) as link_fd, bpf_link.pinned(old_path) as old_fd:
                    with bpf_link.pinned(prog_path) as new_fd:
                        bpf_link.link_update(link_fd, old_fd, new_fd)
            return undo_update
        if self.method != "legacy":
            try:
                with bpf_link.open_cgroup(self.cgroup) as cgroup_fd, bpf_link.pinned(prog_path) as prog_fd:
                    with bpf_link.Fd(bpf_link.link_create(prog_fd, cgroup_fd, hook)) as link_fd:
                        # Closing the fd unpinned detaches it: a failure leaves nothing attached.
                        path = os.path.join(self.links_dir, "%s_%d" % (hook, bpf_link.link_info(link_fd)["id"]))
                        os.makedirs(self.links_dir, exist_ok=True)
                        bpf_link.obj_pin(link_fd, path)
                return lambda: self.remove_link(path)
            except bpf_link.LinkUnsupported:
                if self.method == "link":
                    raise AttachError("attach_method", "this kernel has no cgroup bpf_link (Linux >= 5.7); "
                                                       "use auto or legacy")
                self.warnings.append("no cgroup bpf_link on this kernel: %s attached the legacy way" % hook)
        self.bpftool.attach(self.cgroup, hook, prog_path)

        def undo_attach():
            try:
                self.bpftool.detach(self.cgroup, hook, self.bpftool.prog_id(prog_path))
            except BpftoolError:
                pass
        return undo_attach

    def prog_path(self, prog_id):
        for key, name in [self.ours[prog_id]] if prog_id in self.ours else []:
            return os.path.join(self.pin_dir, key, name)
        raise AttachError(None, "bpf_link holds program %s, which is not pinned in %s" % (prog_id, self.pin_dir))

    def detach_prog(self, prog):
        if prog["link"]:
            self.remove_link(prog["link"]["path"])
        else:
            self.bpftool.detach(self.cgroup, prog["attach_type"], prog["id"])

    @staticmethod
    def remove_link(path):
        """Detach the link even if another process holds it open, then drop the pin."""
        try:
            with bpf_link.pinned(path) as fd:
                bpf_link.link_detach(fd)
        except bpf_link.LinkError:
            pass  # already detached, or Linux < 5.9: dropping the last reference detaches it
        try:
            os.unlink(path)
        except OSError:
            pass

    def absent(self):
        for prog in self.ours_attached:
            self.actions.append("detach %s (id %s) from %s%s" % (prog["name"], prog["id"], prog["attach_type"],
                                                                 " (bpf_link)" if prog["link"] else ""))
        for link in self.links:
            if not (link["attached"] and link["prog_id"] in self.ours):
                self.actions.append("remove bpf_link %s" % link["path"])
        for k in sorted(self.pinned):
            self.actions.append("unpin object %s" % k)
        state = load_state()
        remove_cgroup = (state.get(self.cgroup, {}).get("created_cgroup") and os.path.isdir(self.cgroup)
                         and self.cgroup != self.mount)
        if remove_cgroup:
            if cg.procs(self.cgroup) or cg.children(self.cgroup):
                self.warnings.append("cgroup %s was created by this module but still has processes or "
                                     "children; left in place" % self.cgroup)
                remove_cgroup = False
            else:
                self.actions.append("remove cgroup %s" % self.cgroup)
        shared_dir = os.path.join(self.pin_dir, "maps")
        pin_dir_empty_after = (os.path.isdir(self.pin_dir)
                               and set(os.listdir(self.pin_dir)) <= set(self.pinned) | set(["maps", LINKS_DIR]))
        if pin_dir_empty_after and self.pinned:
            self.actions.append("remove %s" % self.pin_dir)
        after = {"cgroup": self.cgroup, "exists": os.path.isdir(self.cgroup) and not remove_cgroup,
                 "objects": [], "hooks": []}
        if self.module.check_mode or not self.actions:
            return after
        for prog in self.ours_attached:
            self.detach_prog(prog)
        for link in self.links:
            self.remove_link(link["path"])
        for k in self.pinned:
            shutil.rmtree(os.path.join(self.pin_dir, k))
        if pin_dir_empty_after and self.pinned:
            shutil.rmtree(shared_dir, ignore_errors=True)
            shutil.rmtree(self.links_dir, ignore_errors=True)
            os.rmdir(self.pin_dir)
        if remove_cgroup:
            os.rmdir(self.cgroup)
            state.pop(self.cgroup, None)
            save_state(state)
        return after

    def run_cmd(self, argv):
        try:
            runner.CmdRunner(argv[0], module=self.module).run(*argv[1:])
        except runner.CommandError as exc:
            raise AttachError(None, str(exc))

    def result_programs(self):
        if self.module.check_mode:
            return [program_entry(p) for p in self.ours_attached]
        self.read_state()
        return sorted((program_entry(p) for p in self.ours_attached), key=lambda p: p["attach_type"])


def program_entry(prog):
    return {"attach_type": prog["attach_type"], "name": prog["name"], "id": prog["id"],
            "link_id": prog["link"]["id"] if prog["link"] else None}
