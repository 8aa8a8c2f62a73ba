"""`mobile-vla-bench closed-loop` compares each mode with sync episode by episode on the same seeds:
success counts per side, and the time difference with a bootstrap interval whose verdict tells a
measurable difference from a tie."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mobile_vla_ros.tools.bench import cli as bench
from mobile_vla_ros.tools.bench.closed_loop import MIN_PAIRS, paired_with

STORED_RUN = (Path(__file__).resolve().parents[1] / "docs" / "bench"
              / "closed_loop_five_modes_scene_views_geometry_head_seeds1000_1159_h200cpu.json")


def _row(mode: str, durations: dict[int, float | None], latency=0.3, vlm_hz=3.33) -> dict:
    """A bench row whose episode of each seed reached the target in `durations[seed]` s (None: never)."""
    return {"task_set": "standard", "latency": latency, "latency_s": latency, "vlm_hz": vlm_hz, "mode": mode,
            "episodes": [{"seed": s, "success": d is not None, "duration": 20.0 if d is None else d}
                         for s, d in durations.items()]}


def test_a_mode_sooner_on_every_seed_is_sooner_and_noise_around_sync_is_a_tie():
    rng = np.random.default_rng(3)
    sync = {seed: float(t) for seed, t in enumerate(rng.uniform(3, 6, 40))}
    sooner = {seed: t - 0.5 for seed, t in sync.items()}
    noisy = {seed: t + float(rng.normal(0, 0.3)) for seed, t in sync.items()}
    by_mode = {c["mode"]: c for c in paired_with([_row("sync", sync), _row("async-motion", sooner),
                                                  _row("async-no-motion", noisy)])}

    fast = by_mode["async-motion"]
    assert fast["verdict"] == "sooner" and fast["faster_share"] == 1.0
    assert np.allclose([fast["time_diff_mean_s"], fast["time_diff_median_s"], *fast["time_diff_ci95_s"]], -0.5)
    assert fast["speedup"] > 1.0
    tie = by_mode["async-no-motion"]
    low, high = tie["time_diff_ci95_s"]
    assert low < tie["time_diff_mean_s"] < high and low < 0 < high and tie["verdict"] == "tie"


def test_success_is_counted_per_side_and_times_only_over_episodes_both_reached():
    sync = {0: 4.0, 1: None, 2: 5.0, 3: None, 4: 4.5, 5: 3.0, 6: 6.0, 7: 4.0}
    mode = {0: 5.0, 1: 3.0, 2: 6.0, 3: 4.0, 4: 5.5, 5: None, 6: 7.0, 7: 5.0}
    [compared] = paired_with([_row("async-motion", mode), _row("sync", sync)])
    assert (compared["episodes"], compared["both_reached"]) == (8, 5)
    assert (compared["only_mode_reached"], compared["only_baseline_reached"]) == (2, 1)
    # seeds 1 and 3 (sync never arrived) and 5 (the mode never did) do not enter the times
    assert compared["time_diff_mean_s"] == pytest.approx(1.0) and compared["verdict"] == "later"
    assert compared["speedup"] == pytest.approx(np.mean([4.0, 5.0, 4.5, 6.0, 4.0]) / np.mean([5.0, 6.0, 5.5, 7.0, 5.0]))


def test_too_few_common_arrivals_report_no_time_and_rows_without_sync_are_left_out():
    few = dict(list({0: 4.0, 1: 5.0, 2: 6.0, 3: 7.0, 4: 8.0}.items())[:MIN_PAIRS - 1])
    rows = [_row("sync", few), _row("async-motion", {s: t - 1 for s, t in few.items()}),
            _row("async-motion", few, latency=1.5, vlm_hz=0.59)]  # no sync row at 1.5 s
    [compared] = paired_with(rows)
    assert compared["both_reached"] == MIN_PAIRS - 1
    assert compared["time_diff_mean_s"] is None and compared["time_diff_ci95_s"] is None
    assert compared["verdict"] is None


def test_report_of_a_stored_run_adds_the_comparison_and_keeps_the_rows(tmp_path, capsys):
    stored = json.loads(STORED_RUN.read_text())
    out = tmp_path / "again.json"
    assert bench.main(["closed-loop", "--report", str(STORED_RUN), "--out", str(out)]) == 0
    reported = json.loads(out.read_text())
    assert reported["rows"] == stored["rows"]
    printed = capsys.readouterr().out
    assert "Each mode beside sync on the same seeds:" in printed
    assert "Each mode beside sync on the same seeds:" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 0
    rows = {(r["task_set"], r["latency"], r["vlm_hz"], r["mode"]): r for r in stored["rows"]}
    compared = reported["paired_with_sync"]
    assert len(compared) == sum(r["mode"] != "sync" for r in stored["rows"])
    for c in compared:
        mode = rows[(c["task_set"], c["latency"], c["vlm_hz"], c["mode"])]
        sync = rows[(c["task_set"], c["latency"], c["vlm_hz"], "sync")]
        assert c["both_reached"] + c["only_mode_reached"] == mode["successes"]
        assert c["both_reached"] + c["only_baseline_reached"] == sync["successes"]
        if c["verdict"] is not None:
            low, high = c["time_diff_ci95_s"]
            assert low <= c["time_diff_mean_s"] <= high
            assert c["verdict"] == ("sooner" if high < 0 else "later" if low > 0 else "tie")


def test_runs_reported_as_one_keep_the_bench_order_and_refuse_a_row_measured_twice(tmp_path, capsys):
    stored = json.loads(STORED_RUN.read_text())
    parts = []
    for task_set in ("hard", "standard"):  # written in the other order, and a mode split off
        rows = [r for r in stored["rows"] if r["task_set"] == task_set]
        parts += [{**stored, "rows": [r for r in rows if r["mode"] != "expert"]},
                  {**stored, "rows": [r for r in rows if r["mode"] == "expert"]}]
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"part{i}.json")
        paths[-1].write_text(json.dumps(part))
    out = tmp_path / "merged.json"
    assert bench.main(["closed-loop", "--report", *map(str, paths), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"] == stored["rows"]

    capsys.readouterr()
    assert bench.main(["closed-loop", "--report", str(paths[0]), str(paths[0]), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "rows in more than one run" in error and "('hard', 'cpu', 3.33, 'sync')" in error
    not_a_run = tmp_path / "loop.json"
    not_a_run.write_text(json.dumps({"benchmark": "loop", "rows": []}))
    assert bench.main(["closed-loop", "--report", str(not_a_run), "--out", str(out)]) == 2
    assert "expected the JSON of a mobile-vla-bench closed-loop run, got 'loop'" in capsys.readouterr().err
