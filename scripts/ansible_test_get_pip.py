# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test fetches get-pip.py from its own file server to put pip into the
empty virtual environments of `ansible-test sanity --venv`; that server is not
reachable from the machines this project runs on. Python ships pip as a wheel
(ensurepip), so install that one and let it install the pinned versions that
ansible-test asks for, from the package index pip is configured for.
"""
from __future__ import annotations

import ensurepip
import os
import runpy
import sys

# get-pip.py options that `pip install` does not know.
GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    """Install pip, then run `pip install` with the arguments get-pip.py was given."""
    # ensurepip points PIP_CONFIG_FILE at /dev/null in this process; the
    # install below needs the machine's pip configuration (index, certificates).
    saved_environ = dict(os.environ)
    ensurepip.bootstrap(upgrade=True)
    os.environ.clear()
    os.environ.update(saved_environ)
    sys.argv = ["pip", "install"] + [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
