"""The closed-loop benchmarks run end to end (short runs): the numbers they report come from real
node processes, and the async/sync difference they exist to show is there."""

from __future__ import annotations

import json

import pytest

from mobile_vla_ros.tools import bench

VLM_LATENCY = 0.3


@pytest.mark.timeout(240)
def test_loop_benchmark_async_beats_sync_and_loses_no_sensor_messages(tmp_path, capsys):
    out = tmp_path / "loop.json"
    assert bench.main(["loop", "--vlm-latency", str(VLM_LATENCY), "--seconds", "6",
                       "--headroom-sensor-hz", "0", "--out", str(out)]) == 0
    rows = {r["config"]["mode"]: r for r in json.loads(out.read_text())["rows"]}
    table = capsys.readouterr().out
    assert "| 0.3 s | 650 | async |" in table and "| 0.3 s | 650 | sync |" in table

    run, sync = rows["async"], rows["sync"]
    assert 8.0 <= run["chunks_per_s"] <= 12.0, run["chunks_per_s"]  # action_hz 10 +-20 %
    # Sync: one chunk per forward, so at most 1 / VLM latency chunks per second.
    assert 0.6 / VLM_LATENCY <= sync["chunks_per_s"] <= 1.05 / VLM_LATENCY, sync["chunks_per_s"]
    assert run["actions_per_s"] >= 2.5 * sync["actions_per_s"]
    for r in (run, sync):
        assert r["sensor"]["sent"] > 0.8 * 650 * 6
        assert r["sensor"]["lost"] <= 0.01 * r["sensor"]["sent"], r["sensor"]
        assert 0 < r["end_to_end_ms"]["p99"] < 50.0
        assert set(r["processes"]) >= {"synthetic_sources"}
    # Async features are reused: older than the forward, younger than the staleness gate.
    assert VLM_LATENCY <= run["feature_age_s"]["p50"] <= run["config"]["vlm_latency"] * 2 + 1.0
    assert run["period_error_ms"]["p99"] < 20.0


@pytest.mark.timeout(240)
def test_soak_benchmark_reports_rss_deadlines_and_no_crash(tmp_path, capsys):
    out = tmp_path / "soak.json"
    assert bench.main(["soak", "--minutes", "0.75", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["result"]
    assert "deadline misses" in capsys.readouterr().out
    assert result["crashes"] == {}
    assert 8.0 <= result["chunks_per_s"] <= 12.0
    assert result["deadline_miss_percent"] < 5.0
    assert result["safe_stop_events_after_warmup"] == 0
    assert set(result["rss"]) == {"vlm_node", "action_expert_node", "synthetic_sources"}
    for name, rss in result["rss"].items():
        assert rss["after_warmup_mb"] > 10 and abs(rss["growth_percent"]) < 50, (name, rss)
