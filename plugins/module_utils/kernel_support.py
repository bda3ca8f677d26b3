# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the running kernel offers, read from files alone: no pyroute2 import (a third of a
second on a small host), so netlb.multiwan.balancer_facts, run by every role run, stays cheap."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import platform
import re

# bpf_setsockopt in cgroup connect hooks, which the balancer program needs.
MIN_KERNEL = (5, 8)


def kernel_release():
    return platform.release()


def kernel_version(release=None):
    """(major, minor) of *release* (the running kernel's by default); (0, 0) when unreadable."""
    match = re.match(r"(\d+)\.(\d+)", release or platform.release())
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def requirement_problem(release, cgroup2, mptcp_mode, mptcp_problem):
    """Why a host cannot run the balancer, or None: its kernel *release* (5.8 for
    bpf_setsockopt in connect hooks), the *cgroup2* mount point (None: none), the MPTCP mode
    asked and why the host cannot have it (mptcp.check)."""
    if kernel_version(release) < MIN_KERNEL:
        return "kernel %s is older than 5.8; the balancer program needs 5.8" % release
    if cgroup2 is None:
        return "no cgroup2 file system is mounted (see /proc/mounts)"
    if mptcp_problem:
        return "balancer_mptcp %s: %s" % (mptcp_mode, mptcp_problem)
    return None


def _blacklisted_on_cmdline(module, cmdline="/proc/cmdline"):
    """module_blacklist= makes the kernel refuse to load *module*, also on demand."""
    try:
        with open(cmdline) as handle:
            args = handle.read().split()
    except (IOError, OSError):
        return False
    return any(arg.startswith("module_blacklist=") and module in arg.split("=", 1)[1].split(",")
               for arg in args)


def vrf_support(sys_module="/sys/module/vrf", lib_modules="/lib/modules", cmdline="/proc/cmdline"):
    """(supported, reason) for creating VRF devices on this kernel.

    Checked without creating anything: a loaded or built-in driver shows in
    /sys/module/vrf; an installed module is auto-loaded by the kernel on the
    first RTM_NEWLINK of kind vrf (alias rtnl-link-vrf), unless the kernel
    command line forbids loading it.
    """
    if os.path.isdir(sys_module):
        return True, "vrf driver loaded"
    moddir = os.path.join(lib_modules, kernel_release())
    for name in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join(moddir, name)) as handle:
                found = any(os.path.basename(line.split(":", 1)[0].strip()).split(".ko")[0] == "vrf"
                            for line in handle)
        except (IOError, OSError):
            continue
        if not found:
            continue
        if name == "modules.dep" and _blacklisted_on_cmdline("vrf", cmdline):
            return False, ("kernel %s has no VRF support: its vrf module is in module_blacklist= "
                           "on the kernel command line" % kernel_release())
        return True, "vrf driver available in %s" % name
    return False, "kernel %s has no VRF support" % kernel_release()
