"""The role installs the engine (module_utils) on the host for the boot unit,
the status command, the runtime command and the health tracker. A module_utils
file one of them imports but the role misses breaks the host only after a reboot
(the modules themselves get module_utils from Ansible). tasks/files.yml installs
every file of plugins/module_utils (a fileglob, no list kept by hand): the import
closure of those entry points must lie within it."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UTILS = ROOT / "plugins" / "module_utils"
PACKAGE = "ansible_collections.netlb.multiwan.plugins.module_utils"


def imported_utils(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                names.update(alias.name for alias in node.names)
            elif node.module.startswith(PACKAGE + "."):
                names.add(node.module[len(PACKAGE) + 1:].split(".")[0])
    return names


def closure(entry_points):
    seen, todo = set(), list(entry_points)
    while todo:
        for name in imported_utils(todo.pop()):
            if name not in seen:
                seen.add(name)
                todo.append(UTILS / (name + ".py"))
    return seen


def installed_list():
    text = (ROOT / "roles" / "balancer" / "tasks" / "files.yml").read_text()
    assert re.search(r"query\('ansible\.builtin\.fileglob', role_path ~ '/\.\./\.\./plugins/module_utils/\*\.py'\)", text), \
        "tasks/files.yml no longer installs every module_utils file"
    return set(path.stem for path in UTILS.glob("*.py"))


def test_the_role_installs_every_module_the_engine_imports():
    entry_points = [ROOT / "files" / "boot" / "netlb_multiwan_apply.py"] + [
        UTILS / (name + ".py") for name in ("cli", "balancer_status", "tracker")]
    needed = closure(entry_points) | {"cli", "balancer_status", "tracker"}
    assert sorted(needed - installed_list()) == [], "imported on the host but not installed"
