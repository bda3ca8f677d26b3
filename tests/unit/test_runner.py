import os

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import runner
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError
from ansible_collections.netlb.multiwan.plugins.module_utils.cli import Host


def sh(script):
    return runner.CmdRunner("sh", ["-c"]).run(script, check=False)


def test_true_and_false():
    assert runner.CmdRunner("true").run() == (0, "", "")
    assert runner.CmdRunner("false").run(check=False)[0] == 1
    with pytest.raises(runner.CommandError) as info:
        runner.CmdRunner("false").run()
    assert info.value.rc == 1 and info.value.argv == ["false"]
    assert str(info.value) == "false failed (rc=1): "


def test_output_and_the_error_message_names_the_command():
    assert sh("echo out; echo err >&2") == (0, "out\n", "err\n")
    with pytest.raises(runner.CommandError) as info:
        runner.CmdRunner("sh", ["-c"]).run("echo partial; echo broken >&2; exit 3")
    exc = info.value
    assert (exc.rc, exc.out, exc.err, exc.detail) == (3, "partial\n", "broken\n", "broken")
    assert str(exc) == "sh -c echo partial; echo broken >&2; exit 3 failed (rc=3): broken"
    assert exc.last_lines() == "broken\npartial"


def test_stdout_is_the_detail_without_stderr():
    with pytest.raises(runner.CommandError, match=r"failed \(rc=2\): only here$"):
        runner.CmdRunner("sh", ["-c"]).run("echo only here; exit 2")


def test_bpftool_style_json_error_on_stdout():
    with pytest.raises(runner.CommandError) as info:
        runner.CmdRunner("sh", ["-c"]).run("""printf '{"error": "bpf obj get (/sys/fs/bpf/x): No such file"}'; exit 255""")
    assert info.value.detail == "bpf obj get (/sys/fs/bpf/x): No such file"
    assert str(info.value).endswith("failed (rc=255): bpf obj get (/sys/fs/bpf/x): No such file")


def test_last_lines_keeps_the_end_of_a_long_log():
    script = "for i in $(seq 1 40); do echo line $i >&2; done; exit 1"
    with pytest.raises(runner.CommandError) as info:
        runner.CmdRunner("sh", ["-c"]).run(script)
    assert info.value.last_lines(3) == "line 38\nline 39\nline 40"
    assert len(info.value.last_lines().splitlines()) == 15


def test_json():
    cmd = runner.CmdRunner("printf")
    assert cmd.json('{"version": "7.1.0", "features": [1, 2]}') == {"version": "7.1.0", "features": [1, 2]}
    assert cmd.json("") is None
    assert runner.CmdRunner("true").json() is None
    assert runner.CmdRunner("echo").json("  ") is None
    with pytest.raises(ValueError):
        cmd.json("not json")


def test_fixed_arguments_come_right_after_the_command():
    cmd = runner.CmdRunner("echo", ["-n", "fixed"])
    assert cmd.argv("a", "b") == ["echo", "-n", "fixed", "a", "b"]
    assert cmd.run("a", "b") == (0, "fixed a b", "")


def test_a_custom_error_class():
    class MyError(runner.CommandError):
        max_args = 2

    with pytest.raises(MyError) as info:
        runner.CmdRunner("sh", ["-c"], error=MyError).run("exit 4", "ignored-arg")
    assert str(info.value) == "sh -c failed (rc=4): "
    assert info.value.argv == ["sh", "-c", "exit 4", "ignored-arg"]


def test_a_missing_command_is_rc_127_not_an_exception():
    rc, out, err = runner.subprocess_executor()(["/nonexistent/tool", "x"])
    assert (rc, out) == (127, "") and "/nonexistent/tool" in err
    with pytest.raises(runner.CommandError, match=r"^/nonexistent/tool x failed \(rc=127\): .*No such file"):
        runner.CmdRunner("/nonexistent/tool").run("x")


def test_timeout_is_rc_124_with_what_was_printed():
    rc, out, err = runner.subprocess_executor(timeout=0.2)(["sh", "-c", "echo started; exec sleep 5"])
    assert (rc, out) == (124, "started\n") and "timed out after 0.2 s" in err


def test_environ_update():
    execute = runner.subprocess_executor(environ_update={"LC_ALL": "C", "NETLB_TEST": "yes"})
    assert execute(["sh", "-c", "echo $LC_ALL $NETLB_TEST"]) == (0, "C yes\n", "")


class FakeModule:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def run_command(self, argv):
        self.calls.append(argv)
        return self.answers.get(tuple(argv), (1, "", "unexpected %s" % argv))


def test_module_executor():
    module = FakeModule({("bpftool", "-j", "version"): (0, '{"version": "7.1.0"}', "")})
    cmd = runner.CmdRunner("bpftool", ["-j"], module=module)
    assert cmd.json("version") == {"version": "7.1.0"}
    with pytest.raises(runner.CommandError, match="unexpected"):
        cmd.run("prog", "show")
    assert module.calls == [["bpftool", "-j", "version"], ["bpftool", "-j", "prog", "show"]]
    assert runner.module_executor(module)(["bpftool", "-j", "version"])[0] == 0


def test_an_executor_wins_over_a_module():
    calls = []
    cmd = runner.CmdRunner("tool", module=FakeModule({}), executor=lambda argv: calls.append(argv) or (0, "", ""))
    assert cmd.run("x") == (0, "", "")
    assert calls == [["tool", "x"]]


def test_bpftool_runs_through_the_module_and_raises_bpftool_errors():
    module = FakeModule({
        ("/usr/sbin/bpftool", "-j", "version"): (0, '{"version": "7.1.0"}', ""),
        ("/usr/sbin/bpftool", "-j", "prog", "show", "pinned", "/sys/fs/bpf/x"): (
            255, '{"error":"bpf obj get (/sys/fs/bpf): No such file or directory"}', ""),
        ("/usr/sbin/bpftool", "prog", "loadall", "o.o", "/pins", "map", "name", "mw_a", "pinned", "/a",
         "pinmaps", "/pins/maps"): (0, "", ""),
    })
    tool = Bpftool(module, "/usr/sbin/bpftool")
    assert tool.version() == "7.1.0"
    with pytest.raises(BpftoolError) as info:
        tool.prog_id("/sys/fs/bpf/x")
    assert isinstance(info.value, runner.CommandError)
    assert info.value.detail == "bpf obj get (/sys/fs/bpf): No such file or directory"
    assert str(info.value) == ("/usr/sbin/bpftool -j prog show failed (rc=255): "
                               "bpf obj get (/sys/fs/bpf): No such file or directory")
    assert tool.run("prog", "show", "pinned", "/sys/fs/bpf/x", check=False)[0] == 255
    tool.loadall("o.o", "/pins", reuse={"mw_a": "/a"})  # without -j


def test_which(tmp_path, monkeypatch):
    tool = tmp_path / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "notexec").write_text("")
    (tmp_path / "adir").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path))
    assert runner.which("mytool") == str(tool)
    assert runner.which("notexec") is None
    assert runner.which("adir") is None
    assert runner.which("nonexistent-tool-xyz") is None
    assert runner.which("sh", dirs=()) is None
    assert runner.which("mytool", dirs=()) == str(tool)
    monkeypatch.setenv("PATH", "")
    assert runner.which("mytool", dirs=[str(tmp_path)]) == str(tool)
    assert Host().get_bin_path("mytool") is None


def test_which_also_looks_in_sbin(monkeypatch):
    monkeypatch.setenv("PATH", "")
    tools = [os.path.join(d, name) for d in runner.SBIN_DIRS if os.path.isdir(d) for name in sorted(os.listdir(d))
             if os.path.isfile(os.path.join(d, name)) and os.access(os.path.join(d, name), os.X_OK)]
    if not tools:
        pytest.skip("no command in /usr/sbin or /sbin")
    name = os.path.basename(tools[0])
    assert runner.which(name) == [t for t in tools if os.path.basename(t) == name][0]
    assert Host().get_bin_path(name) == runner.which(name)


def test_cli_host_runs_commands_through_the_runner():
    host = Host({"a": 1}, check_mode=True)
    assert (host.params, host.check_mode) == ({"a": 1}, True)
    assert host.run_command(["sh", "-c", "echo hi; exit 5"]) == (5, "hi\n", "")
    assert host.run_command(["/nonexistent/tool"])[0] == 127
    assert host.get_bin_path("sh")
    # the boot script's form, with bpftool missing: a BpftoolError, not an OSError
    with pytest.raises(BpftoolError, match=r"^/nonexistent/bpftool -j version failed \(rc=127\)"):
        Bpftool(Host(), Host().get_bin_path("nonexistent-bpftool") or "/nonexistent/bpftool").version()
