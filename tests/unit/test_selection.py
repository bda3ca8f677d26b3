"""The control plane's selection tables (module_utils/selection.py)."""
import collections

from ansible_collections.netlb.multiwan.plugins.module_utils import selection


def test_rotation_gives_exact_shares_over_every_cycle():
    table = selection.rotation({0: 2, 1: 1, 2: 1})
    assert len(table) == 4 and collections.Counter(table) == {0: 2, 1: 1, 2: 1}
    assert table == [0, 1, 2, 0]   # nginx's smooth weighted round robin order
    long = table * 100
    for start in range(4):   # any 4 sequential connects
        assert collections.Counter(long[start:start + 4]) == {0: 2, 1: 1, 2: 1}


def test_rotation_reduces_by_gcd_and_skips_zero_weights():
    assert selection.rotation({0: 20, 1: 10, 3: 0}) == [0, 1, 0]
    assert selection.rotation({0: 0}) == []
    assert selection.rotation({}) == []


def test_rotation_scales_a_large_total_into_the_table():
    weights = dict((s, 997 - s) for s in range(16))   # coprime-ish, sum ~15,800
    table = selection.rotation(weights)
    assert len(table) == selection.ROTATION_MAX
    counts = collections.Counter(table)
    assert set(counts) == set(range(16))
    for s, w in weights.items():
        assert abs(counts[s] - w * selection.ROTATION_MAX / sum(weights.values())) <= 1


def test_buckets_follow_the_weights():
    table = selection.buckets({0: 2, 1: 1, 2: 1})
    counts = collections.Counter(table)
    assert len(table) == selection.BUCKETS
    for slot, share in ((0, 0.5), (1, 0.25), (2, 0.25)):
        assert abs(counts[slot] / float(selection.BUCKETS) - share) < 0.03


def test_an_uplink_leaving_moves_only_its_buckets():
    before = selection.buckets({0: 1, 1: 1, 2: 1})
    after = selection.buckets({0: 1, 2: 1})
    moved = [b for b in range(selection.BUCKETS) if before[b] != after[b]]
    assert moved and all(before[b] == 1 for b in moved)
    assert all(after[b] != 1 for b in range(selection.BUCKETS))
    # and coming back restores exactly the old table
    assert selection.buckets({0: 1, 1: 1, 2: 1}) == before


def test_no_live_uplink_leaves_every_socket_alone():
    assert set(selection.buckets({0: 0, 1: 0})) == {selection.NO_UPLINK}
