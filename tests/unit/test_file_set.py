"""netlb.multiwan.file_set on a temp dir: converges, reports per file, diffs,
changes nothing in check mode or on bad input (the field is named)."""
import os
import stat

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import files as file_utils
from ansible_collections.netlb.multiwan.plugins.modules import file_set


class FakeModule:
    def __init__(self, files, check_mode=False, diff=True, unlisted=None):
        self.params = {"files": [dict({"mode": "0644", "content": None, "content_base64": None}, **f) for f in files],
                       "unlisted": unlisted}
        self.check_mode, self._diff = check_mode, diff

    def atomic_move(self, src, dest):
        os.rename(src, dest)


def snapshot(root):
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        out[dirpath] = None
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[path] = (f.read(), stat.S_IMODE(os.stat(path).st_mode))
    return out


def test_creates_then_converges_then_reports_nothing(tmp_path):
    files = [{"path": str(tmp_path / "etc" / "a.conf"), "content": "a\n"},
             {"path": str(tmp_path / "sbin" / "tool"), "content": "#!/bin/sh\n", "mode": "0755"}]
    first = file_set.run(FakeModule(files))
    assert first["changed"] and first["changed_paths"] == [f["path"] for f in files]
    assert first["created_dirs"] == [str(tmp_path / "etc"), str(tmp_path / "sbin")]
    assert (tmp_path / "etc" / "a.conf").read_text() == "a\n"
    assert stat.S_IMODE(os.stat(files[1]["path"]).st_mode) == 0o755
    assert first["diff"][0]["before_header"].endswith("(absent)") and first["diff"][0]["after"] == "a\n"
    again = file_set.run(FakeModule(files))
    assert again == {"changed": False, "changed_paths": [], "created_dirs": [], "diff": []}


def test_updates_content_and_mode_with_a_diff(tmp_path):
    path = tmp_path / "unit.service"
    path.write_text("old\n")
    os.chmod(path, 0o600)
    result = file_set.run(FakeModule([{"path": str(path), "content": "new\n"}]))
    assert result["changed_paths"] == [str(path)]
    assert result["diff"] == [{"before_header": str(path), "after_header": str(path),
                               "before": "old\n(mode 0600)\n", "after": "new\n(mode 0644)\n"}]
    assert path.read_text() == "new\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o644
    os.chmod(path, 0o640)   # a mode change alone
    assert file_set.run(FakeModule([{"path": str(path), "content": "new\n"}]))["changed_paths"] == [str(path)]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_check_mode_reports_and_changes_nothing(tmp_path):
    (tmp_path / "keep").write_text("x")
    before = snapshot(tmp_path)
    files = [{"path": str(tmp_path / "new" / "f"), "content": "y"}, {"path": str(tmp_path / "keep"), "content": "z"}]
    result = file_set.run(FakeModule(files, check_mode=True))
    assert result["changed"] and len(result["changed_paths"]) == 2 and result["created_dirs"] == [str(tmp_path / "new")]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("files, field", [
    ([{"path": "relative/file", "content": ""}], "files[0].path"),
    ([{"path": "/x/y", "content": ""}, {"path": "/x//y", "content": ""}], "files[1].path"),
    ([{"path": "/x/y", "content": "", "mode": "0999"}], "files[0].mode"),
    ([{"path": "/x/y", "content": "", "mode": "rw-r--r--"}], "files[0].mode"),
    ([{"path": "/x/y"}], "files[0]"),
    ([{"path": "/x/y", "content": "", "content_base64": ""}], "files[0]"),
    ([{"path": "/x/y", "content_base64": "not base64!"}], "files[0].content_base64"),
])
def test_bad_input_names_the_field_and_writes_nothing(tmp_path, files, field):
    for f in files:
        if f["path"].startswith("/"):
            f["path"] = str(tmp_path) + f["path"]
    before = snapshot(tmp_path)
    with pytest.raises(file_utils.FileSetError) as exc:
        file_set.run(FakeModule(files))
    assert exc.value.field == field
    assert snapshot(tmp_path) == before


def test_a_directory_in_the_way_is_an_error_before_any_write(tmp_path):
    (tmp_path / "dir").mkdir()
    files = [{"path": str(tmp_path / "first"), "content": "1"}, {"path": str(tmp_path / "dir"), "content": "2"}]
    with pytest.raises(file_utils.FileSetError, match="not a regular file"):
        file_set.run(FakeModule(files))
    assert not (tmp_path / "first").exists()


def test_a_binary_file_from_base64_with_its_digest_in_the_diff(tmp_path):
    path = tmp_path / "state" / "multiwan.bpf.o"
    files = [{"path": str(path), "content_base64": "f0VMRgIBAQ=="}]  # \x7fELF\x02\x01\x01
    result = file_set.run(FakeModule(files))
    assert result["changed"] and path.read_bytes() == b"\x7fELF\x02\x01\x01"
    assert result["diff"][0]["after"].startswith("(binary, 7 bytes, sha256 ")
    assert not file_set.run(FakeModule(files))["changed"]


def test_unlisted_reports_what_the_set_lacks_and_removes_nothing(tmp_path):
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    for name in ("netlb-multiwan-bpf.service", "netlb-multiwan-uplink-lte.service", "sshd.service"):
        (etc / name).write_text("[Unit]\n")
    files = [{"path": str(etc / "netlb-multiwan-bpf.service"), "content": "[Unit]\n"}]
    wanted = {"paths": [str(etc), str(run)], "patterns": ["netlb-multiwan-*.service", "multiwan.slice"]}
    result = file_set.run(FakeModule(files, unlisted=wanted))
    assert result["unlisted"] == [str(etc / "netlb-multiwan-uplink-lte.service")]
    assert (etc / "netlb-multiwan-uplink-lte.service").exists()
