"""Run this checkout's playbooks against the local kernel and collect facts.

Used on the host and inside VM lab guests: ``run_cases`` applies the
vrf module once per case through a real ansible-playbook run; ``snapshot``
records what the kernel shows, so tests can compare before and after.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "tests" / "integration" / "playbooks"


def ansible_env() -> dict:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".build" / "collections"),
        ANSIBLE_PYTHON_INTERPRETER=str(ROOT / ".venv" / "bin" / "python"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_LOCALHOST_WARNING="False",
    )
    return env


_RECAP = re.compile(r"^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def play_recap(output: str) -> dict:
    """ansible-playbook's PLAY RECAP: {host: {ok, changed, unreachable, failed}}."""
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)),
                         "unreachable": int(m.group(4)), "failed": int(m.group(5))}
            for m in _RECAP.finditer(output)}


def ansible_bin(name: str) -> str:
    """An ansible-core command: the project's venv, or NETLB_ANSIBLE_BIN_DIR (make compat
    points it at the venv of the ansible-core minor under test)."""
    return str(Path(os.environ.get("NETLB_ANSIBLE_BIN_DIR") or ROOT / ".venv" / "bin") / name)


def site_over_ssh(fleet, inventory: Path, *extra: str, timeout: float = 900, during=None) -> dict:
    """playbooks/site.yml from this machine against a lab fleet (VM guests or
    containers: anything with ansible_env() and controller_run()), with pipelining on
    as most fleets run it. rc, output, seconds, the PLAY RECAP, and one host's changed.
    *during*: (a task name's start, a callable) called once, as that task starts: an
    operator acting on the host while the run is in progress."""
    argv = [ansible_bin("ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "site.yml"), *extra]
    env = {**ansible_env(), **fleet.ansible_env(), "ANSIBLE_PIPELINING": "True"}
    started = time.monotonic()
    if during is None:
        proc = fleet.controller_run(argv, env=env, timeout=timeout)
        out = proc.stdout + proc.stderr
    else:
        task, act = during
        lines = []
        with subprocess.Popen(["ip", "netns", "exec", fleet.netns, *argv], env={**env, "PYTHONUNBUFFERED": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              text=True) as proc:
            for line in proc.stdout:  # pytest-timeout bounds a run that never ends
                lines.append(line)
                if task is not None and line.startswith("TASK [%s" % task):
                    act()
                    task = None
        out = "".join(lines) + ("" if task is None else "\n(task %r never started)" % during[0])
    recap = play_recap(out)
    hosts = list(recap.values())
    return {"rc": proc.returncode, "output": out, "recap": recap, "seconds": round(time.monotonic() - started),
            "changed": hosts[0]["changed"] if len(hosts) == 1 else None,
            "failed": hosts[0]["failed"] if len(hosts) == 1 else None}


def run_playbook(playbook: str, extra_vars: dict, *, check: bool = False, diff: bool = False,
                 env: dict | None = None) -> dict:
    """ansible-playbook against localhost (connection local); returns rc, output, seconds."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(extra_vars, handle)
        vars_file = handle.name
    argv = [ansible_bin("ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", "@" + vars_file,
            str(PLAYBOOKS / playbook)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, env={**ansible_env(), **(env or {})}, capture_output=True, text=True,
                              timeout=900)
    finally:
        os.unlink(vars_file)
    return {"rc": proc.returncode, "output": proc.stdout + proc.stderr,
            "seconds": round(time.monotonic() - started, 1)}


def run_cases(cases: list[dict], *, check: bool = False, diff: bool = False, playbook: str = "vrf_cases.yml") -> dict:
    """Apply a module once per case (vrf_cases.yml: netlb.multiwan.vrf,
    attach_cases.yml: netlb.multiwan.cgroup_bpf_attach); results keyed by case id.
    The results come from ansible-core's tree callback (the last task's result per host:
    the case loop's), not from a task of the playbook: in an emulated guest every module
    run costs seconds."""
    with tempfile.TemporaryDirectory(prefix="netlb-cases-") as tree:
        run = run_playbook(playbook, {"cases": cases}, check=check, diff=diff,
                           env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.tree", "ANSIBLE_CALLBACK_TREE_DIR": tree})
        try:
            with open(os.path.join(tree, "localhost")) as handle:
                results = json.load(handle).get("results", [])
        except (OSError, ValueError):
            results = []
    run["results"] = {r["item"]["id"]: r for r in results}
    return run


SNAPSHOT_COMMANDS = {
    "link": ["ip", "-d", "link", "show"],
    "addr": ["ip", "addr", "show"],
    "route4": ["ip", "route", "show", "table", "all"],
    "route6": ["ip", "-6", "route", "show", "table", "all"],
    "rule4": ["ip", "rule", "show"],
    "rule6": ["ip", "-6", "rule", "show"],
}


def wait_for_settled_addresses(netns: str | None = None, timeout: float = 10.0) -> None:
    """Releasing an interface from a VRF cycles it and its IPv6 link-local goes
    through DAD again: compare states only once that is over."""
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-6", "addr", "show", "tentative"]
    deadline = time.monotonic() + timeout
    while subprocess.run(argv, capture_output=True, text=True).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.1)


def snapshot(netns: str | None = None) -> dict:
    """What the kernel shows: links, addresses, routes of all tables, rules."""
    wait_for_settled_addresses(netns)
    result = {}
    for key, argv in SNAPSHOT_COMMANDS.items():
        if netns:
            argv = argv[:1] + ["-n", netns] + argv[1:]
        proc = subprocess.run(argv, capture_output=True, text=True)
        result[key] = proc.stdout + proc.stderr
    return result


def failed_cleanly(result: dict) -> bool:
    """A module failure without a Python traceback (ansible-core >= 2.19 always
    sets ``exception``, to "(traceback unavailable)" when there is none)."""
    return (result.get("failed") is True
            and "Traceback (most recent call last)" not in json.dumps(result)
            and result.get("exception", "(traceback unavailable)") == "(traceback unavailable)")
