"""A fake of module_utils/netlink.Netlink for the engines' unit tests: enough of a
kernel (links, addresses, per-table routes, l3mdev and fwmark rules) to force
failures, sessions and check mode without a VRF-capable kernel."""
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as m


class FakeNetlink:
    """Enough of a kernel: links, addresses, per-table routes, l3mdev rules."""

    def __init__(self):
        self.links_ = {
            1: nl.Link(1, "lo", up=True),
            2: nl.Link(2, "usb0", kind="veth", up=True),
            3: nl.Link(3, "wlp1s0", kind="veth", up=True),
        }
        self.addrs = {2: ["192.0.2.2/24"], 3: ["10.0.0.2/24", "2001:db8:2::2/64"]}
        self.tables = {10: []}
        self.rules = set()
        self.fwmarks = []
        self.sources = []
        self.calls = []
        self.fail_on = None

    def _log(self, name, *args):
        self.calls.append((name,) + args)
        if name == self.fail_on:
            raise nl.NetlinkError(1, "injected failure")

    def links(self):
        return [nl.Link(lk.index, lk.name, lk.kind, lk.master, lk.up, lk.vrf_table) for lk in self.links_.values()]

    def addresses(self, index):
        return [{"address": a, "family": 10 if ":" in a else 2, "permanent": True} for a in self.addrs.get(index, [])]

    def routes(self, table, names=None):
        return list(self.tables.get(table, []))

    def l3mdev_rules(self):
        return set(self.rules)

    def route_oif(self, address):
        return 3 if address.startswith("10.0.0.") else 2

    def create_vrf(self, name, table):
        self._log("create_vrf", name, table)
        index = 9 if 9 not in self.links_ else max(self.links_) + 1
        self.links_[index] = nl.Link(index, name, kind="vrf", up=True, vrf_table=table)
        self.tables.setdefault(table, [])
        self.rules |= {m.AF_INET, m.AF_INET6}
        return index

    def set_master(self, index, master):
        self._log("set_master", index, master)
        self.links_[index].master = master
        if master:  # the kernel flushes IPv6 addresses and moves link routes
            self.addrs[index] = [a for a in self.addrs[index] if ":" not in a]
            table = self.links_[master].vrf_table
            self.tables[table] += m.connected_routes(self.links_[index].name, self.addrs[index])

    def add_address(self, index, address):
        self._log("add_address", index, address)
        self.addrs[index].append(address)

    def replace_route(self, route, table, dev_index=None):
        self._log("replace_route", route.render(), table)
        self.tables[table] = [r for r in self.tables.get(table, []) if r.key != route.key] + [route]

    def delete_link(self, index):
        self._log("delete_link", index)
        del self.links_[index]

    def flush_table(self, table):
        self._log("flush_table", table)
        self.tables[table] = []

    def add_l3mdev_rule(self, family):
        self._log("add_l3mdev_rule", family)

    def delete_l3mdev_rule(self, family):
        self._log("delete_l3mdev_rule", family)

    def fwmark_rules(self):
        return [dict(r) for r in self.fwmarks]

    def add_fwmark_rule(self, family, priority, fwmark, fwmask, table):
        self._log("add_fwmark_rule", family, priority, fwmark, fwmask, table)
        self.fwmarks.append(dict(family=family, priority=priority, fwmark=fwmark, fwmask=fwmask, table=table))

    def delete_fwmark_rule(self, family, priority, fwmark, fwmask, table):
        self._log("delete_fwmark_rule", family, priority, fwmark, fwmask, table)
        self.fwmarks.remove(dict(family=family, priority=priority, fwmark=fwmark, fwmask=fwmask, table=table))

    def source_rules(self):
        return [dict(r) for r in self.sources]

    def add_source_rule(self, family, priority, src, table):
        self._log("add_source_rule", family, priority, src, table)
        self.sources.append(dict(family=family, priority=priority, src=src, table=table))

    def delete_source_rule(self, family, priority, src, table):
        self._log("delete_source_rule", family, priority, src, table)
        self.sources.remove(dict(family=family, priority=priority, src=src, table=table))

    def close(self):
        self.closed = True
