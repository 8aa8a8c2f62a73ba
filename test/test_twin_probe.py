"""The twin probe: a linear bearing readout of a stand-in's pooled feature, scored on frames that show
the target's same-colour twin and on frames that show the target without it, the same frames for every
stand-in."""

from __future__ import annotations

import json
import math

import numpy as np

from mobile_vla_ros.paths import default_model_dir
from mobile_vla_ros.sim.world import SimConfig
from mobile_vla_ros.vlm import twin_probe


def test_the_ridge_readout_recovers_a_linear_map_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (400, 6))
    y = x @ rng.normal(0, 1, (6, 2)) + 0.5
    read = twin_probe.ridge_readout(x[:300], y[:300], x[300:], alpha=1e-3)
    np.testing.assert_allclose(read, y[300:], atol=1e-2)
    noise = rng.normal(0, 1, (400, 2))
    assert np.abs(twin_probe.ridge_readout(x[:300], noise[:300], x[300:]) - noise[300:]).mean() > 0.6


def test_the_probe_scores_every_stand_in_on_the_same_frames_with_and_without_the_twin(tmp_path, capsys):
    # 32 tasks: 128 frames to fit the readout on, more than the feature's 64 dimensions (on 32 frames the
    # ridge fit of the shipped stand-in's feature read the standard frames worse than predicting 0).
    fit, scored = twin_probe.render_probe_frames(32, workers=2)
    assert len(fit) == 32 * 4 and set(scored) == {"twin", "standard", "hard, no twin"}
    assert scored["twin"] and all(not math.isnan(frame[3]) for frame in scored["twin"])
    assert scored["standard"] and all(math.isnan(frame[3]) for frame in scored["standard"])  # no twins there
    assert all(math.isnan(frame[3]) for frame in scored["hard, no twin"])
    half_fov = math.radians(SimConfig().camera_fovy) / 2
    assert all(abs(twin_probe.target_bearing(f)) < half_fov for group in scored.values() for f in group)
    out = tmp_path / "probe.json"
    vlm = default_model_dir() / "vlm"
    assert twin_probe.main(["--vlm", str(vlm), str(vlm), "--tasks", "32", "--workers", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    first, second = result["results"]
    assert first == second  # the same stand-in twice: the same numbers
    assert {name: first[name]["frames"] for name in scored} == {name: len(group) for name, group in scored.items()}
    assert 0.0 <= first["twin"]["nearer_the_twin"] <= 1.0
    # the shipped stand-in reads the target where it is the only object of its colour in view
    assert first["standard"]["bearing_mae_deg"] < first["standard"]["bearing_mae_deg_zero"]
    assert f"| {vlm} | {first['twin']['nearer_the_twin']:.0%} of {len(scored['twin'])} |" in capsys.readouterr().out
