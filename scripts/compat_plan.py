"""Which ansible-core minors `make compat` tests, and with which Python.

usage: compat_plan.py META_RUNTIME PYTHON...   (PYTHON: interpreters, oldest first)

Prints one line per ansible-core minor from meta/runtime.yml's requires_ansible up to the
newest that pip can install here: "MINOR PYTHON", with the oldest given interpreter that
pip offers that minor for (each minor supports a window of controller Pythons).
"""
from __future__ import annotations

import re
import subprocess
import sys


def minimum(runtime_yml: str) -> tuple:
    match = re.search(r'^requires_ansible:\s*["\']?>=\s*(\d+)\.(\d+)', open(runtime_yml).read(), re.M)
    if not match:
        sys.exit("%s: requires_ansible is not of the form '>=X.Y[.Z]'" % runtime_yml)
    return int(match.group(1)), int(match.group(2))


def installable_minors(python: str) -> set:
    """The ansible-core minors pip offers to this interpreter (final releases only)."""
    proc = subprocess.run([python, "-m", "pip", "index", "versions", "ansible-core"],
                          capture_output=True, text=True, check=False)
    match = re.search(r"^Available versions: (.*)$", proc.stdout, re.M)
    if proc.returncode or not match:
        sys.exit("pip index versions ansible-core failed for %s:\n%s" % (python, proc.stderr.strip()))
    return {tuple(int(x) for x in v.split(".")[:2])
            for v in match.group(1).split(", ") if re.fullmatch(r"\d+\.\d+\.\d+", v)}


def plan(lowest: tuple, offers: list) -> dict:
    """{minor: python} for every minor >= lowest that some interpreter is offered, each
    with the first (oldest) interpreter of *offers* [(python, minors)] that has it."""
    chosen: dict = {}
    for python, minors in offers:
        for minor in sorted(minors):
            if minor >= lowest:
                chosen.setdefault(minor, python)
    return dict(sorted(chosen.items()))


def main(argv: list) -> int:
    if len(argv) < 2:
        sys.exit(__doc__)
    lowest = minimum(argv[0])
    chosen = plan(lowest, [(python, installable_minors(python)) for python in argv[1:]])
    if lowest not in chosen:
        sys.exit("ansible-core %d.%d (requires_ansible) cannot be installed here with %s"
                 % (lowest + (" ".join(argv[1:]),)))
    for minor, python in chosen.items():
        print("%d.%d %s" % (minor + (python,)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
