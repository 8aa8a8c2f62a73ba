"""The policy probe: one rendered view through the shipped VLM and action model, against the rule the
model imitates. Also a check of the shipped model's behaviour on views it must get right."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mobile_vla_ros.paths import default_model_dir
from mobile_vla_ros.sim.episode import steer_command
from mobile_vla_ros.tools.simulation import policy_probe


@pytest.fixture(scope="module")
def rows():
    return policy_probe.probe(default_model_dir(), "standard", [1000, 1001, 1002], bearings=(0.0,),
                              motions=((0.3, 0.0),))


def test_the_shipped_policy_drives_to_a_target_ahead_and_searches_when_it_sees_none(rows):
    ahead = [r for r in rows if r.looking_at == "target"]
    away = [r for r in rows if r.looking_at == "away"]
    assert len(ahead) == len(away) == 3
    # Less turn than the rule gives a target 0.25 rad (14 deg) aside: the stand-in reads bearings to about
    # 6 deg, so a policy can turn a little, but not as if the target were off to one side.
    aside_turn = float(steer_command(0.25, 2.0)[1])
    for r in ahead:  # the rule: drive at up to 0.45 m/s, no turn
        assert r.label_forward_mps > 0.3 and r.label_yaw_rate_radps == pytest.approx(0.0, abs=1e-9)
        assert r.forward_mps > 0.25 and abs(r.yaw_rate_radps) < aside_turn, r
    for r in away:  # the rule: turn counter-clockwise in place at 0.6 rad/s
        assert (r.label_forward_mps, r.label_yaw_rate_radps) == (0.0, pytest.approx(0.6))
        assert abs(r.forward_mps) < 0.05 and r.yaw_rate_radps > 0.4, r


def test_noisy_rest_windows_carry_the_sim_imus_noise_around_a_base_at_rest():
    from mobile_vla_ros.core.model_spec import ModelSpec
    from mobile_vla_ros.sim.world import SimConfig

    spec = ModelSpec.load(default_model_dir())
    cfg = SimConfig.for_evaluation("standard")
    windows = policy_probe.noisy_rest_windows(spec, cfg, 64)
    assert windows.shape == (64, 1, spec.sensor_window, spec.sensor_channels)
    spread = windows.reshape(-1, spec.sensor_channels).std(axis=0)
    assert np.allclose(spread, cfg.imu_noise, rtol=0.05)
    assert np.allclose(windows.mean(axis=(0, 1, 2)), policy_probe.rest_window(spec)[0].mean(axis=0), atol=0.01)


def test_the_probe_command_writes_its_table_and_summary(tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert policy_probe.main(["--task-set", "hard", "--seeds", "1000", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    # 3 bearings of the target and of its twin, and one view away, each with 3 motions
    assert len(report["rows"]) == (3 + 3 + 1) * 3 == printed.count("| 1000 |")
    kinds = {f"{kind} {band}" for kind in ("target", "twin", "away") for band in ("near", "far")}
    assert set(report["summary"]) <= kinds
    away = "away " + ("near" if report["rows"][-1]["distance_m"] < 2.5 else "far")
    assert report["summary"][away]["turn_sign_agrees"] is not None  # searching: the rule turns, every time
    # 16 noisy windows per row by default: the noise's spread and how far it moves the mean turn
    assert all(r["yaw_rate_noise_std"] >= 0.0 and r["noisy_yaw_rate_radps"] is not None for r in report["rows"])
    assert {"yaw_rate_noise_shift", "yaw_rate_noise_std"} <= set(report["summary"][away])
