"""The tracker's events (module_utils/events.py): one structured journal entry per
transition, in journald's native protocol, and the operator's hooks, never waited for."""
import os
import socket
import time

from ansible_collections.netlb.multiwan.plugins.module_utils import events


def journald(tmp_path):
    """A datagram socket where journald's would be: what the tracker sends it."""
    path = str(tmp_path / "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return path, sock


def hook(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_a_transition_is_one_structured_journal_entry(tmp_path):
    path, sock = journald(tmp_path)
    lines = []
    emitter = events.Events(lines.append, str(tmp_path / "none"), path)
    emitter.emit(events.event("down", "wifi", "3 probe rounds in a row without 1 of 1 targets answering",
                              tier=1, active_tier=2, rtt_ms=12.5, loss=1.0))
    entry = dict(line.split("=", 1) for line in sock.recv(65536).decode().splitlines())
    assert entry == {
        "MESSAGE": "wifi down: 3 probe rounds in a row without 1 of 1 targets answering (rtt 12.5 ms, loss 100%)",
        "MESSAGE_ID": events.MESSAGE_ID, "PRIORITY": "4", "SYSLOG_IDENTIFIER": "netlb-multiwan-track",
        "NETLB_STATE": "down", "NETLB_UPLINK": "wifi", "NETLB_TIER": "1", "NETLB_ACTIVE_TIER": "2",
        "NETLB_REASON": "3 probe rounds in a row without 1 of 1 targets answering",
        "NETLB_RTT_MS": "12.5", "NETLB_LOSS": "1.00"}
    assert lines == []  # in the journal, not twice


def test_without_journald_the_message_goes_to_the_log():
    lines = []
    events.Events(lines.append, "/nonexistent", "/nonexistent/socket").emit(
        events.event("tier", reason="after wifi down", tier=2, active_tier=2))
    assert lines == ["new connections now go to tier 2: after wifi down"]


def test_hooks_get_the_event_and_are_never_waited_for(tmp_path, monkeypatch):
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    record = tmp_path / "record"
    hook(hooks, "10-record", 'echo "$NETLB_UPLINK $NETLB_STATE $NETLB_REASON" >> %s' % record)
    hook(hooks, "20-slow", "sleep 60")
    hook(hooks, "30-fails", "exit 3")
    (hooks / "40-not-executable").write_text("#!/bin/sh\necho no >> %s\n" % record)
    lines = []
    emitter = events.Events(lines.append, str(hooks), None)
    started = time.time()
    emitter.emit(events.event("down", "wifi", "carrier lost"))
    emitter.emit(events.event("up", "wifi", "4 good probe rounds in a row"))
    assert time.time() - started < 1.0   # the slow hook is not waited for
    deadline = time.time() + 5
    while time.time() < deadline and len(emitter.running) > 2:   # the two slow ones stay
        emitter.reap()
        time.sleep(0.05)
    assert sorted(record.read_text().splitlines()) == ["wifi down carrier lost", "wifi up 4 good probe rounds in a row"]
    assert lines.count("hook %s failed (exit status 3)" % (hooks / "30-fails")) == 2
    monkeypatch.setattr(events, "HOOK_TIMEOUT", 0.0)
    emitter.reap(now=time.time() + 3600)   # past their time: killed, with their process group
    assert emitter.running == [] and lines.count("hook %s killed after 0 s" % (hooks / "20-slow")) == 2


def test_hooks_are_bounded(tmp_path, monkeypatch):
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    hook(hooks, "slow", "sleep 60")
    monkeypatch.setattr(events, "MAX_RUNNING", 2)
    lines = []
    emitter = events.Events(lines.append, str(hooks), None)
    for _attempt in range(3):
        emitter.emit(events.event("up", "wifi", "back"))
    hooks_said = [line for line in lines if line.startswith("hook ")]
    assert len(emitter.running) == 2 and hooks_said == ["hook %s skipped: 2 hooks still running" % (hooks / "slow")]
    for proc, _deadline, _path in emitter.running:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_the_eda_rulebook_selects_the_tracker_s_entries_by_their_fields():
    import re
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "extensions" / "eda" / "rulebooks" / "uplink_events.yml"
    text = path.read_text()
    (play,) = yaml.safe_load(text)
    (source,) = play["sources"]
    assert source["ansible.eda.journald"]["match"] == "MESSAGE_ID=" + events.MESSAGE_ID
    assert events.MESSAGE_ID in text.split("- name:")[0]   # the comment says the same
    used = set(re.findall(r"event\.journald\.(\w+)", " ".join(r["condition"] for r in play["rules"])))
    fields = set(k.lower() for k in events.event("down", "wifi", "x", 1, 1))
    assert used and used <= fields, used - fields
    states = set(re.findall(r'"(\w+)"', " ".join(r["condition"] for r in play["rules"])))
    assert states - {"1"} <= set(events.STATES)
