"""The engine on the host (filter balancer_engine): the role installs the collection's
module_utils that the host's commands import, followed through every import, and one
small executable per command. A module the engine imports but the role misses would break
the host only after a reboot (the modules themselves get module_utils from Ansible): here
the filter's files are installed into a temp root and every command and every installed
module is run by an interpreter that sees nothing else (no site-packages, no checkout)."""
import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netlb.multiwan.plugins.filter import balancer_engine as engine
from ansible_collections.netlb.multiwan.plugins.module_utils import layout

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(*layout.PACKAGE.split("."))


def install(tmp_path, commands=None):
    """The filter's files under tmp_path (the host's paths made relative to it)."""
    lib = tmp_path / "lib"
    commands = commands or dict((name, "/sbin/" + name) for name in engine.COMMANDS)
    files = engine.balancer_engine(commands, python=sys.executable, lib=str(lib))
    for entry in files:
        path = Path(entry["path"]) if entry["path"].startswith(str(tmp_path)) else tmp_path / entry["path"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry["content"])
        path.chmod(int(entry.get("mode", "0644"), 8))
    return files, lib


def test_every_command_runs_from_the_installed_package_alone(tmp_path):
    files, _lib = install(tmp_path)
    assert [f["path"] for f in files[:4]] == ["/sbin/" + name for name in sorted(engine.COMMANDS)]
    for name in engine.COMMANDS:
        # -S: no site-packages (nor pyroute2: the engine reports it missing, it does not crash
        # on import); -I: nothing from the environment or the working directory.
        script = (tmp_path / "sbin" / name).read_text().replace("#!" + sys.executable, "")
        proc = subprocess.run([sys.executable, "-S", "-I", "-c", script, "--help"], capture_output=True, text=True,
                              timeout=60, cwd=str(tmp_path), check=False)
        assert proc.returncode == 0 and "usage: %s" % name in proc.stdout, (name, proc.stdout, proc.stderr)


def test_every_installed_module_imports_from_the_installed_package_alone(tmp_path):
    files, lib = install(tmp_path)
    modules = sorted(Path(f["path"]).stem for f in files if f["path"].endswith(".py"))
    code = "import sys; sys.path.insert(0, %r)\n" % str(lib) + "".join(
        "import %s.%s\n" % (layout.PACKAGE, name) for name in modules)
    proc = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_package_is_the_import_closure_of_the_commands():
    names = engine.closure(module for module, _summary in engine.COMMANDS.values())
    # Every module_utils import in those files, read independently of the filter.
    for name in names:
        tree = ast.parse((ROOT / "plugins" / "module_utils" / (name + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(layout.PACKAGE):
                assert (node.module.split(".")[-1] if node.module != layout.PACKAGE else None) in names + [None]
                if node.module == layout.PACKAGE:
                    assert set(a.name for a in node.names) <= set(names), (name, node.module)
    # Modules only Ansible's modules run stay off the host.
    assert "boot" in names and "tracker" in names


def test_the_filters_reading_of_imports_is_pythons(tmp_path):
    """imported_utils reads the import lines with a regex (cheap: the role runs it per host);
    for every module_utils file and some awkward spellings it finds what ast finds."""
    def by_ast(source):
        names = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module == layout.PACKAGE:
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(layout.PACKAGE + "."):
                names.add(node.module[len(layout.PACKAGE) + 1:].split(".")[0])
        return names

    utils = ROOT / "plugins" / "module_utils"
    for path in sorted(utils.glob("*.py")):
        assert engine.imported_utils(path.stem) == by_ast(path.read_text()), path.name
    (tmp_path / "awkward.py").write_text(
        "from %s import (a,  # why a\n    b as bee,\n    c)\n"
        "def late():\n    from %s.d import x\n    from %s import e, \\\n        f\n"
        "import os  # from %s import nothing\n" % ((layout.PACKAGE,) * 4))
    assert engine.imported_utils("awkward", str(tmp_path)) == by_ast((tmp_path / "awkward.py").read_text()) == {
        "a", "b", "c", "d", "e", "f"}


def test_an_unknown_command_is_named():
    with pytest.raises(AnsibleFilterError, match="unknown command netlb-multiwan-oops"):
        engine.balancer_engine({"netlb-multiwan-oops": "/sbin/x"}, python="/usr/bin/python3")


def test_balancer_apply_carries_the_engine_in_its_own_payload():
    # Ansible puts into a module's payload the module_utils it imports, transitively (a
    # function's import too); balancer_apply writes the engine from there (option install).
    source = (ROOT / "plugins" / "modules" / "balancer_apply.py").read_text()
    carried = engine.closure(layout.imports_of(source))
    assert set(layout.engine_modules(engine._source)) <= set(carried)


def test_the_engine_is_read_from_a_zip_payload_as_from_a_directory(tmp_path):
    # As AnsiballZ runs a module: the collection's packages in a zip on sys.path, nothing else.
    payload = tmp_path / "payload.zip"
    utils = ROOT / "plugins" / "module_utils"
    with zipfile.ZipFile(payload, "w") as out:
        for package in ("ansible_collections", "ansible_collections/netlb", "ansible_collections/netlb/multiwan",
                        "ansible_collections/netlb/multiwan/plugins",
                        "ansible_collections/netlb/multiwan/plugins/module_utils"):
            out.writestr(package + "/__init__.py", "")
        for path in sorted(utils.glob("*.py")):
            out.write(path, "ansible_collections/netlb/multiwan/plugins/module_utils/" + path.name)
    code = ("import sys, json; sys.path.insert(0, %r)\n"
            "from ansible_collections.netlb.multiwan.plugins.module_utils import layout\n"
            "files = layout.engine_files('/lib', layout.carried_sources().__getitem__)\n"
            "print(json.dumps(files))\n" % str(payload))
    proc = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == layout.engine_files("/lib", engine._source)
