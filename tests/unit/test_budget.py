"""Data budgets (module_utils/budget.py, schema.budget): periods, usage across counter
resets and restarts, when a budget is spent; the clock is the test's."""
import datetime

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import budget, schema


def at(*args):
    return datetime.datetime(*args).timestamp()


@pytest.mark.parametrize("value, expected", [
    (1500, 1500), ("2M", 2000000), ("20G", 20 * 10 ** 9), ("1.5T", 15 * 10 ** 11), ("2MiB", 2 * 1024 ** 2),
    ("500 mb", 500 * 10 ** 6), ("10KB", 10000),
])
def test_sizes(value, expected):
    assert schema.size(value, "b") == expected


@pytest.mark.parametrize("value, field, words", [
    ({"bytes": "20X"}, "u.budget.bytes", "must be a size"),
    ({"bytes": 0}, "u.budget.bytes", "at least 1 byte"),
    ({"bytes": True}, "u.budget.bytes", "must be a size"),
    ({"period": "month"}, "u.budget.bytes", "is required"),
    ({"bytes": "1G", "period": "year"}, "u.budget.period", "must be one of day, week, month"),
    ({"bytes": "1G", "reset": 31}, "u.budget.reset", "must be an integer 1-28"),
    ({"bytes": "1G", "period": "week", "reset": 0}, "u.budget.reset", "must be an integer 1-7"),
    ({"bytes": "1G", "period": "day", "reset": 1}, "u.budget.reset", "every midnight"),
    ({"bytes": "1G", "when_spent": "block"}, "u.budget.when_spent", "must be one of drain, backup"),
    ({"bytes": "1G", "quota": 1}, "u.budget.quota", "is not a budget setting"),
    ("20G", "u.budget", "must be a dictionary"),
])
def test_bad_budgets_name_the_field(value, field, words):
    with pytest.raises(schema.SchemaError) as err:
        schema.budget(value, "u.budget")
    assert err.value.field == field and words in err.value.message, str(err.value)


def test_budgets_are_normalised():
    expected = {"bytes": 20 * 10 ** 9, "period": "month", "reset": 1, "when_spent": "drain"}
    assert schema.budget({"bytes": "20G"}, "b") == expected
    assert schema.budget({"bytes": "2M", "period": "day", "when_spent": "backup"}, "b") == {
        "bytes": 2000000, "period": "day", "reset": None, "when_spent": "backup"}
    assert schema.budget(None, "b") is None


def test_periods_start_on_the_reset_day_at_local_midnight():
    month = {"period": "month", "reset": 15}
    assert budget.period(month, at(2026, 12, 20, 10)) == (at(2026, 12, 15), at(2027, 1, 15))
    assert budget.period(month, at(2027, 1, 3)) == (at(2026, 12, 15), at(2027, 1, 15))
    week = {"period": "week", "reset": 1}   # Mondays; 2026-12-04 is a Friday
    assert budget.period(week, at(2026, 12, 4, 23, 59)) == (at(2026, 11, 30), at(2026, 12, 7))
    assert budget.period({"period": "day"}, at(2026, 12, 4, 8)) == (at(2026, 12, 4), at(2026, 12, 5))


def test_usage_counts_both_ways_across_counter_resets_and_starts_again_each_period():
    day = schema.budget({"bytes": "2M", "period": "day"}, "b")
    usage = budget.Usage()
    now = at(2026, 12, 4, 10)
    usage.sample(day, now, 5000000, 7)            # the first sample: a reference, no usage yet
    assert usage.used == 0
    usage.sample(day, now + 1, 6500000, 7)
    assert usage.used == 1500000 and not usage.spent(day)
    usage.sample(day, now + 2, 400000, 7)         # the modem replugged: its counter started again
    usage.sample(day, now + 3, 700000, 9)         # ... and came back as another interface
    assert usage.used == 1500000 + 400000 + 700000 and usage.spent(day)
    usage.sample(day, now + 4, None, None)        # gone: nothing to add
    restored = budget.Usage.from_dict(usage.as_dict())   # what the usage file keeps
    restored.sample(day, at(2026, 12, 5, 0, 0, 1), 900000, 9)   # the next day
    assert restored.used == 200000 and not restored.spent(day)
    status = restored.status(day, at(2026, 12, 5, 1))
    assert status == {"bytes": 2000000, "used": 200000, "spent": False, "period": "day",
                      "period_start": at(2026, 12, 5), "period_end": at(2026, 12, 6), "when_spent": "drain"}


def test_the_usage_file_round_trips(tmp_path):
    path = str(tmp_path / "state" / "usage.json")
    assert budget.load(path) == {}
    budget.save(path, {"wifi": budget.Usage(1.0, 42, 1000, 3, 2.0)})
    assert budget.load(path)["wifi"].as_dict() == {"period_start": 1.0, "used": 42, "counter": 1000, "ifindex": 3,
                                                   "sampled": 2.0, "reset_at": 0.0}
    assert budget.usage_file({"state_dir": "/var/lib/x"}) == "/var/lib/x/usage.json"


def test_the_operator_s_reset_starts_the_usage_again_once():
    day = schema.budget({"bytes": "2M", "period": "day"}, "b")
    usage = budget.Usage()
    now = at(2026, 12, 4, 10)
    usage.sample(day, now, 0, 7)
    usage.sample(day, now + 1, 3000000, 7)
    assert usage.spent(day)
    usage.sample(day, now + 2, 3100000, 7, reset_at=now + 1.5)   # netlb-multiwan budget wifi reset
    assert usage.used == 100000 and not usage.spent(day)   # the last sample's bytes, no more
    usage.sample(day, now + 3, 3200000, 7, reset_at=now + 1.5)   # the same reset: once
    assert usage.used == 200000


def test_a_spent_budget_drains_or_demotes_the_uplink_in_the_runtime_view():
    from ansible_collections.netlb.multiwan.plugins.module_utils import datapath, health

    def doc(when_spent):
        return {"uplinks": [{"name": "mobile", "weight": 1, "track": {}},
                            {"name": "wifi", "weight": 1, "track": {},
                             "budget": {"bytes": 10, "period": "day", "reset": None, "when_spent": when_spent}},
                            {"name": "lte", "weight": 1, "track": {}}]}

    spent = {"uplinks": {}, "budgets": {"wifi": {"spent": True}}}
    drained = health.runtime_uplinks(doc("drain"), spent)
    assert [u["spent"] for u in drained] == [False, True, False]
    assert datapath.live_weights(drained, "weighted") == {0: 1, 2: 1}
    backup = health.runtime_uplinks(doc("backup"), spent)
    assert [u["tier"] for u in backup] == [1, schema.SPENT_TIER, 1] and datapath.live_weights(backup, "weighted") == {
        0: 1, 2: 1}
    others_down = {"uplinks": {"mobile": {"state": "down"}, "lte": {"state": "down"}}, "budgets": spent["budgets"]}
    assert datapath.live_weights(health.runtime_uplinks(doc("backup"), others_down), "weighted") == {1: 1}
    assert datapath.live_weights(health.runtime_uplinks(doc("drain"), others_down), "weighted") == {}
    renewed = {"uplinks": {}, "budgets": {"wifi": {"spent": False}}}
    assert datapath.live_weights(health.runtime_uplinks(doc("backup"), renewed), "weighted") == {0: 1, 1: 1, 2: 1}
