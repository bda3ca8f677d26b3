"""Finding the sessions that carry the Ansible connection, on a fake /proc."""
import os

from ansible_collections.netlb.multiwan.plugins.module_utils import connection as c


def test_env_ssh_connection():
    env = {"SSH_CONNECTION": "198.51.100.7 51234 192.0.2.2 22"}
    assert c.sessions_from_env(env) == {("192.0.2.2", "198.51.100.7")}


def test_env_ipv4_mapped_and_ssh_client_fallback():
    assert c.sessions_from_env({"SSH_CONNECTION": "::ffff:198.51.100.7 1 ::ffff:192.0.2.2 22"}) == {
        ("192.0.2.2", "198.51.100.7")}
    assert c.sessions_from_env({"SSH_CLIENT": "2001:db8::7 5555 22"}) == {(None, "2001:db8::7")}
    assert c.sessions_from_env({}) == set()


def test_hex_addresses_from_proc_net():
    assert c._hex_to_ip("0100007F") == "127.0.0.1"
    assert c._hex_to_ip("0202000A") == "10.0.2.2"
    assert c._hex_to_ip("B80D0120000000000000000001000000") == "2001:db8::1"


def make_proc(tmp_path, tree, sockets, tcp_lines):
    """tree: {pid: ppid}; sockets: {pid: [inode]}; tcp_lines for /proc/<self>/net/tcp."""
    for pid, ppid in tree.items():
        d = tmp_path / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "net").mkdir()
        (d / "stat").write_text("%d (sshd: op@pts/0 (x)) S %d 1 1" % (pid, ppid))
        for n, inode in enumerate(sockets.get(pid, [])):
            os.symlink("socket:[%d]" % inode, str(d / "fd" / str(n)))
        header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        (d / "net" / "tcp").write_text(header + "".join(tcp_lines))
        (d / "net" / "tcp6").write_text(header)
    return str(tmp_path)


def tcp_line(local, peer, state, inode):
    return "   0: %s:0016 %s:C738 %s 00000000:00000000 00:00000000 00000000     0        0 %d\n" % (
        local, peer, state, inode)


def test_ancestor_socket_is_found_even_without_env(tmp_path):
    # 300 (module) <- 200 (sudo) <- 100 (sshd holding the session socket)
    proc = make_proc(tmp_path, {300: 200, 200: 100, 100: 1}, {100: [4242], 200: [7]}, [
        tcp_line("0202000A", "0702000A", "01", 4242),   # 10.0.2.2 <- 10.0.2.7 established
        tcp_line("0100007F", "0100007F", "01", 7),      # loopback: ignored
        tcp_line("0202000A", "0902000A", "0A", 99),     # listening: ignored
    ])
    assert c.sessions_from_ancestors(proc, pid=300) == {("10.0.2.2", "10.0.2.7")}


def test_no_sockets_no_sessions(tmp_path):
    proc = make_proc(tmp_path, {300: 1}, {}, [])
    assert c.sessions_from_ancestors(proc, pid=300) == set()
