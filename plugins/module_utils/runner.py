# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running commands, in the style of community.general's CmdRunner, but small.

    bpftool = CmdRunner("/usr/sbin/bpftool", ["-j"], module=module, error=BpftoolError)
    info = bpftool.json("prog", "show", "pinned", path)   # bpftool -j prog show pinned PATH
    rc, out, err = bpftool.run("map", "delete", ..., check=False)

An executor runs one argv and returns (rc, stdout, stderr):
``module_executor(module)`` through an AnsibleModule's run_command (or anything
with one, such as module_utils/cli.Host), ``subprocess_executor()`` without
Ansible. Python standard library only, importable without ansible installed:
the boot unit and the netlb-multiwan commands run it on the managed host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess

# Where tools such as bpftool and ip live, which a user's or a unit's PATH may lack.
SBIN_DIRS = ("/usr/sbin", "/sbin")
RC_NOT_STARTED = 127  # as a shell reports a command it cannot run
RC_TIMED_OUT = 124  # as coreutils' timeout reports a command it killed


class CommandError(Exception):
    """A command that exited with rc != 0. ``detail``: what it said about it, the
    ``{"error": "..."}`` that ``bpftool -j`` prints on stdout when there is one,
    else its stderr (or stdout)."""

    max_args = None  # how many words of the argv the message shows (None: all)

    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = list(argv), rc, out or "", err or ""
        self.detail = self.detail_of(self.out, self.err)
        command = " ".join(str(a) for a in self.argv[:self.max_args])
        super(CommandError, self).__init__("%s failed (rc=%s): %s" % (command, rc, self.detail))

    @staticmethod
    def detail_of(out, err):
        detail = (err or out).strip()
        try:
            return json.loads(out).get("error", detail)
        except (ValueError, AttributeError):  # not JSON, or JSON but not an object
            return detail

    def last_lines(self, count=15):
        """The last ``count`` non-blank lines of stderr then stdout (a verifier log ends there)."""
        text = "\n".join(x for x in (self.err, self.out) if x)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return "\n".join(lines[-count:])


def subprocess_executor(timeout=None, environ_update=None):
    """An executor running the command itself (no Ansible), waiting at most ``timeout`` seconds.

    It never raises: a command that cannot be started (missing, not executable)
    gives rc 127 with the OSError's text on stderr, one killed after ``timeout``
    gives rc 124 with what it printed, and "timed out after N s" on stderr. So
    every failure reaches the caller the same way, as rc != 0 (CmdRunner raises
    its error for it). ``environ_update``: variables set for the command (such
    as {"LC_ALL": "C"}) on top of this process's environment.
    """

    def execute(argv):
        env = dict(os.environ, **environ_update) if environ_update else None
        try:
            # Host commands (netlb-multiwan, the boot unit, the tracker) have no AnsibleModule
            # and its run_command; modules use module_executor.
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # pylint: disable=ansible-bad-function
                                    universal_newlines=True, env=env)
        except OSError as exc:
            return RC_NOT_STARTED, "", str(exc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err = (err or "") + "%s: timed out after %s s\n" % (argv[0], timeout)
            return RC_TIMED_OUT, out or "", err
        return proc.returncode, out, err

    return execute


def spawn(argv, environ_update=None):
    """Start *argv* in its own session (its process group can be killed as one) and
    return its Popen without waiting: the tracker's hooks, which failover never waits
    for. Its output goes where this process's does. OSError when it cannot start."""
    env = dict(os.environ, **environ_update) if environ_update else None
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, close_fds=True,  # pylint: disable=ansible-bad-function
                            start_new_session=True)


def module_executor(module):
    """An executor calling ``module.run_command(argv)``: an AnsibleModule's, or cli.Host's.
    The method is looked up at each call, not when the executor is made."""

    def execute(argv):
        return module.run_command(argv)

    return execute


def which(name, dirs=SBIN_DIRS):
    """The path of the executable ``name`` in PATH, then in ``dirs``; None when there is none."""
    search = [d for d in os.environ.get("PATH", "").split(os.pathsep) + list(dirs) if d]
    return shutil.which(name, path=os.pathsep.join(search))


class CmdRunner(object):
    """``command`` with the ``fixed`` arguments always after it (["-j"] for bpftool),
    run by ``executor``; without one, by ``module``'s run_command, without a module
    by subprocess_executor(). ``error``: the CommandError subclass ``run`` raises."""

    def __init__(self, command, fixed=(), executor=None, module=None, error=CommandError):
        if executor is None:
            executor = module_executor(module) if module is not None else subprocess_executor()
        self.command, self.fixed, self.executor, self.error = command, list(fixed), executor, error

    def argv(self, *args):
        return [self.command] + self.fixed + list(args)

    def run(self, *args, check=True):
        """(rc, out, err) of ``command fixed... args...``; raises ``error`` when rc != 0,
        unless check=False."""
        argv = self.argv(*args)
        rc, out, err = self.executor(argv)
        if rc != 0 and check:
            raise self.error(argv, rc, out, err)
        return rc, out, err

    def json(self, *args):
        """The command's stdout parsed as JSON, None when it printed nothing. Raises
        ``error`` when rc != 0, ValueError when the output is not JSON."""
        _rc, out, _err = self.run(*args)
        return json.loads(out) if out.strip() else None
