"""The expert with the information of one image: the rule the action expert is trained to imitate
(`--labels sim-expert`), its labels computed from a recorded episode, and the rule followed exactly
in closed loop at a slow VLM."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mobile_vla_ros.core.model_spec import ModelSpec
from mobile_vla_ros.paths import default_model_dir
from mobile_vla_ros.sim.episode import (
    IN_VIEW,
    SEARCH_RATE,
    SEARCH_STEP,
    image_informed_command,
    steer_command,
)
from mobile_vla_ros.sim.expert_labels import informed_chunks
from mobile_vla_ros.sim.world import SimConfig, sample_task
from mobile_vla_ros.tools.recordings import EXECUTED_TOPIC, SIM_TRUTH_TOPICS, read_recording
from mobile_vla_ros.tools.simulation import record_sim
from mobile_vla_ros.tools.simulation.closed_loop import (
    ClosedLoopEpisode,
    InformedExpertEpisode,
    LoopConfig,
    informed_expert_episodes,
)
from mobile_vla_ros.tools.training import train

HARD = SimConfig.for_evaluation("hard")
TWIST = ["linear.x", "angular.z"]


def test_it_steers_to_a_target_its_image_showed_and_otherwise_searches_one_step_then_waits():
    bearing, distance = np.radians([-100.0, -20.0, 10.0, 100.0]), np.full(4, 2.0)
    v, w = image_informed_command(bearing, distance, np.ones(4, bool), np.zeros(4))
    np.testing.assert_array_equal(np.stack([v, w]), np.stack(steer_command(bearing, distance)))
    assert w[0] == -1.0 and w[3] == 1.0  # turned past the target since the image: back the short way
    # Not in its image: counter-clockwise until the turn since the image reaches SEARCH_STEP, whatever
    # side the target is on (the policy cannot know it), then still.
    turned = np.array([-0.5, 0.0, SEARCH_STEP - 1e-3, SEARCH_STEP])
    v, w = image_informed_command(bearing, distance, np.zeros(4, bool), turned)
    np.testing.assert_array_equal(v, 0.0)
    np.testing.assert_array_equal(w, [SEARCH_RATE, SEARCH_RATE, SEARCH_RATE, 0.0])
    assert SEARCH_STEP < 2 * IN_VIEW  # one step never carries the camera past a target between two images


def test_the_chunk_rolls_the_rule_out_from_the_samples_pose():
    """Step 0 is the rule at the sample's pose; later steps follow the motion the earlier ones command:
    a search that reaches SEARCH_STEP within the chunk stops there, a steer turns towards the target."""
    target = np.array([[0.0, 2.0, 0.2], [2.0, 0.0, 0.2]])
    pose = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3]])  # target at +90 deg (unseen), at -0.3 rad (seen)
    yaw_at_image = np.array([-(SEARCH_STEP - 0.02), 0.5])
    chunks = informed_chunks(pose, target, np.array([False, True]), yaw_at_image, steps=8, dt=0.0125)
    assert chunks.shape == (2, 8, 2)
    np.testing.assert_array_equal(chunks[0, :, 0], 0.0)
    turned = np.arange(8) * 0.0125 * SEARCH_RATE + SEARCH_STEP - 0.02  # yaw since the image at each step
    np.testing.assert_array_equal(chunks[0, :, 1], np.where(turned < SEARCH_STEP, SEARCH_RATE, 0.0))
    assert 0 < (chunks[0, :, 1] == 0).sum() < 8
    v0, w0 = steer_command(-0.3, 2.0 - 0.2)
    assert chunks[1, 0] == pytest.approx([v0, w0])
    assert np.all(np.diff(chunks[1, :, 1]) > 0)  # the remaining bearing shrinks as it turns (w < 0)


@pytest.fixture(scope="module")
def hard_bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard_bag")
    assert record_sim.main(["--episodes", "1", "--seed", "3", "--out", str(root), "--task-set", "hard",
                            "--time-limit", "12"]) == 0
    return root / "episode_00003"


TOPICS = {"image": "/camera/image_raw", "sensor": "/sensor", "instruction": "/instruction",
          "action": "/cmd_vel", "executed": EXECUTED_TOPIC} | SIM_TRUTH_TOPICS


def relabelled(bag):
    """(recording, its sim-expert dataset with zero features, the ground truth it relabels from; one
    bag: its times are unshifted)."""
    spec = ModelSpec.load(default_model_dir())
    rec = read_recording(bag, spec, TOPICS, TWIST)
    data = train.build_dataset([rec], [np.zeros((len(rec.images), spec.feature_dim), np.float32)], spec, 0.04,
                               TWIST, labels="sim-expert")
    return rec, data, train._informed_labels(rec, 0, np.array([t for t, _ in rec.images]), data.times)


def test_labels_of_a_recorded_episode_depend_on_what_the_samples_image_and_motion_input_show(hard_bag):
    """Relabelled from the bag's ground truth: where the sample's image showed the target the label
    steers to it; where it did not, the label searches or holds by the turn since that image, and that
    turn is what the policy's own motion input (integrated gyro) says, to within a few degrees."""
    rec, data, informed = relabelled(hard_bag)
    assert rec.task is not None and len(rec.poses) > 100
    samples = np.arange(len(data))
    for age in (0.0, 1.6, 3.0):
        images = data.feature_index(samples, np.full(len(data), age))
        labels = data.labels(samples, images)
        shown = informed.image_shows_target[images]
        turned = informed.sample_pose[samples, 2] - informed.image_yaw[images]
        dyaw = data.motion(samples, images)[:, 3]
        np.testing.assert_allclose(dyaw, turned, atol=math.radians(3))
        searching = ~shown
        assert searching.any() and shown.any()  # a hard episode starts unseen and ends at the target
        hold = searching & (turned >= SEARCH_STEP)
        np.testing.assert_array_equal(labels[hold, 0], 0.0)
        np.testing.assert_array_equal(labels[searching & (turned < SEARCH_STEP - 0.1), 0, 1],
                                      np.float32(SEARCH_RATE))
        if age == 0.0:
            assert not hold.any()  # the newest image: nothing turned since
        if age == 3.0:
            assert hold.any()  # the recorded expert turned on; the label waits for a newer image
        x, y, yaw = informed.sample_pose[shown].T
        tx, ty, radius = informed.sample_target[shown].T
        bearing = (np.arctan2(ty - y, tx - x) - yaw + np.pi) % (2 * np.pi) - np.pi
        v, w = steer_command(bearing, np.hypot(tx - x, ty - y) - radius)
        np.testing.assert_allclose(labels[shown, 0, 0], v, atol=1e-6)
        np.testing.assert_allclose(labels[shown, 0, 1], w, atol=1e-6)
    # The image flag is the recorded pose's: the first image showing the target is the first one
    # taken after the recorded bearing came within IN_VIEW.
    target = rec.task["objects"][rec.task["target"]]
    bearings = np.array([math.remainder(math.atan2(target["y"] - y, target["x"] - x) - yaw, math.tau)
                         for _, (x, y, yaw) in rec.poses])
    first_seen = rec.poses[int(np.argmax(np.abs(bearings) <= IN_VIEW))][0]
    first_shown = np.array([t for t, _ in rec.images])[informed.image_shows_target][0]
    assert first_seen - 0.02 <= first_shown < first_seen + 1 / 15 + 0.02  # camera at 15 Hz, poses at 50 Hz


def test_a_sample_turned_in_place_has_the_turn_in_its_motion_input_and_the_turned_poses_labels(hard_bag):
    """`--turn-augment`: a sample turned by delta keeps its image and sensor window; its motion input's
    yaw grows by delta (dx, dy unchanged) and its labels are the rule's at the turned pose, so a target
    the image showed is steered to from where it now is, and a search holds once the turn since the
    image reaches SEARCH_STEP."""
    _, data, informed = relabelled(hard_bag)
    samples = np.arange(len(data))
    images = data.feature_index(samples, np.full(len(data), 1.6))
    turn = np.random.default_rng(0).uniform(-1.0, 1.0, len(data))
    plain, turned = data.motion(samples, images), data.motion(samples, images, turn)
    np.testing.assert_allclose(turned[:, :3], plain[:, :3])
    np.testing.assert_allclose(turned[:, 3], plain[:, 3] + turn)
    labels = data.labels(samples, images, turn)
    shown = informed.image_shows_target[images]
    x, y, yaw = informed.sample_pose.T
    tx, ty, radius = informed.sample_target.T
    bearing = (np.arctan2(ty - y, tx - x) - (yaw + turn) + np.pi) % (2 * np.pi) - np.pi
    v, w = steer_command(bearing, np.hypot(tx - x, ty - y) - radius)
    np.testing.assert_allclose(labels[shown, 0, 0], v[shown], atol=1e-6)
    np.testing.assert_allclose(labels[shown, 0, 1], w[shown], atol=1e-6)
    since_image = yaw + turn - informed.image_yaw[images]
    np.testing.assert_array_equal(labels[~shown & (since_image >= SEARCH_STEP), 0], 0.0)
    np.testing.assert_array_equal(labels[~shown & (since_image < SEARCH_STEP - 0.1), 0, 1], np.float32(SEARCH_RATE))
    assert (~shown & (since_image >= SEARCH_STEP)).sum() > (~shown & (plain[:, 3] >= SEARCH_STEP)).sum() > 0
    # A turn is the label of the turned robot, not of the recorded one.
    assert np.abs(labels - data.labels(samples, images))[shown, 0, 1].max() > 0.5


def test_the_geometry_heads_targets_moved_by_the_motion_input_land_on_the_target_now(hard_bag):
    """`--geometry-head`: its targets are where the target's centre was in the body frame at the
    sample's image (and whether the image showed it); moved by the motion input as the model moves
    its estimate, they land where the target is at the sample, to within a few centimetres, at
    every feature age. Checked on a recorded episode's ground truth and integrated gyro."""
    import torch

    from mobile_vla_ros.models.action_expert import GEOMETRY_SCALE, ActionExpert

    _, data, informed = relabelled(hard_bag)
    samples = np.arange(len(data))
    x, y, yaw = informed.sample_pose.T
    tx, ty, _ = informed.sample_target.T
    now = np.stack([np.cos(yaw) * (tx - x) + np.sin(yaw) * (ty - y),
                    -np.sin(yaw) * (tx - x) + np.cos(yaw) * (ty - y)], axis=1)
    for age in (0.0, 1.6, 3.0):
        images = data.feature_index(samples, np.full(len(data), age))
        truth = data.geometry(images)
        np.testing.assert_array_equal(truth[:, 0], informed.image_shows_target[images])
        assert 0 < truth[:, 0].mean() < 1
        # A confident "in view" and the true position, as the head would predict them.
        predicted = torch.from_numpy(np.concatenate([np.full((len(data), 1), 30.0, np.float32),
                                                     truth[:, 1:] / GEOMETRY_SCALE], axis=1))
        moved = ActionExpert._target_now(predicted, torch.from_numpy(data.motion(samples, images))).numpy()
        np.testing.assert_allclose(moved[:, 0], 1.0)
        err = np.hypot(*(moved[:, 1:] * GEOMETRY_SCALE - now).T)
        assert np.percentile(err, 95) < 0.05 and err.max() < 0.15, (age, np.percentile(err, [50, 95, 100]))
        if age > 0:  # the robot moved: the unmoved estimate would be far off
            assert np.percentile(np.hypot(*(truth[:, 1:] - now).T), 95) > 0.5


def test_turn_augmentation_turns_the_asked_fraction_within_the_limit_and_needs_relabelling():
    rng = np.random.default_rng(0)
    turns = train.turn_augmentation(rng, 20000, 0.5, (-1.0, 1.0))
    assert 0.48 < np.mean(turns != 0) < 0.52 and np.abs(turns).max() <= 1.0 and np.abs(turns).max() > 0.99
    ccw = train.turn_augmentation(rng, 1000, 1.0, (0.0, 1.0))  # --turn-augment-range 0,1: the way the expert searches
    assert ccw.min() >= 0.0 and ccw.max() > 0.99
    with pytest.raises(SystemExit):
        train._parser().parse_args(["--bags", "b", "--out", "o", "--turn-augment-range", "1,0"])
    state = rng.bit_generator.state
    assert train.turn_augmentation(rng, 100, 0.0, (-1.0, 1.0)) is None
    assert rng.bit_generator.state == state  # off: the draws, and so the trained model, are unchanged
    with pytest.raises(ValueError, match="--turn-augment: turned samples need --labels sim-expert"):
        train._check_args(train._parser().parse_args(["--bags", "b", "--out", "o", "--turn-augment", "0.5"]),
                          train.init_distributed())
    with pytest.raises(ValueError, match=r"--turn-augment: expected a fraction in \[0, 1\], got 2.0"):
        train._check_args(train._parser().parse_args(["--bags", "b", "--out", "o", "--turn-augment", "2"]),
                          train.init_distributed())


def test_turn_augmentation_with_an_age_limit_turns_only_samples_with_younger_features():
    """--turn-augment-max-age: the turned states only where the drawn feature age is below the limit; the
    draws are those without the limit, so older samples keep their recorded states unchanged."""
    staleness = np.random.default_rng(1).uniform(0.0, 3.5, 20000)
    unlimited = train.turn_augmentation(np.random.default_rng(0), 20000, 0.5, (-1.0, 1.0))
    limited = train.turn_augmentation(np.random.default_rng(0), 20000, 0.5, (-1.0, 1.0), staleness, 1.4)
    young = staleness < 1.4
    np.testing.assert_array_equal(limited[young], unlimited[young])
    assert not limited[~young].any() and unlimited[~young].any()
    assert 0.48 < np.mean(limited[young] != 0) < 0.52
    args = train._parser().parse_args(["--bags", "b", "--out", "o", "--labels", "sim-expert", "--turn-augment",
                                       "0.5", "--turn-augment-max-age", "0"])
    with pytest.raises(ValueError, match=r"--turn-augment-max-age: expected seconds > 0, got 0\.0"):
        train._check_args(args, train.init_distributed())


def test_followed_exactly_the_rule_solves_the_hard_set_at_a_slow_vlm():
    """What the labels teach is enough: the rule on the images a 1.5 s / 0.59 Hz VLM delivers (the
    closed loop's VLM schedule: timer phase, episode pause, skipped ticks) reaches every target of the
    first hard seeds, in time for a policy's detours."""
    results = informed_expert_episodes(list(range(1000, 1006)), HARD, vlm_latency=1.5, vlm_hz=0.59)
    assert all(r["success"] for r in results), [r["seed"] for r in results if not r["success"]]
    assert max(r["duration"] for r in results) < 0.9 * HARD.time_limit


def test_the_rule_acts_only_on_delivered_images_and_waits_for_the_first():
    """The expert's perception arrives through the VLM schedule: no decision before the first
    forward's result (episode pause + timer phase + latency), and a slower VLM delivers fewer."""
    task = sample_task(1000, HARD)
    fast = InformedExpertEpisode(task, HARD, LoopConfig(vlm_hz=3.33, vlm_latency=0.3))
    slow = InformedExpertEpisode(task, HARD, LoopConfig(vlm_hz=0.59, vlm_latency=1.5))
    try:
        rows = {"fast": fast.run(), "slow": slow.run()}
    finally:
        fast.close()
        slow.close()
    # As vlm_node: the first forward starts on the first frame after the instruction (both at sim time
    # 0, during the episode pause); the first decision is at the next action tick after its result.
    still_for = 1.5 - slow.cfg.episode_pause  # s after the start
    moving = np.flatnonzero(np.any(np.asarray(slow.commands) != 0, axis=1))
    late = moving[0] / slow.cfg.execute_hz - still_for
    assert -1e-9 <= late <= 1 / slow.cfg.action_hz + 1 / slow.cfg.execute_hz
    assert rows["slow"]["forwards"] < rows["fast"]["forwards"]
    assert rows["fast"]["success"] and rows["fast"]["duration"] <= rows["slow"]["duration"]


def test_a_policy_driven_recording_is_the_closed_loop_episode_and_relabels(tmp_path):
    """mobile-vla-record-sim --policy-driver: the bag holds the episode the robot's code drives with that
    model (the path of `ClosedLoopEpisode` with the same seed and VLM setting), its executed commands are
    the policy's, not the expert's on /cmd_vel, and the trainer relabels it from its ground truth."""
    model, seed = default_model_dir(), 3
    assert record_sim.main(["--episodes", "1", "--seed", str(seed), "--out", str(tmp_path), "--task-set", "hard",
                            "--time-limit", "6", "--policy-driver", str(model)]) == 0
    episode = json.loads((tmp_path / "episodes.json").read_text())[str(seed)]
    latency, vlm_hz = record_sim.policy_latency(seed, 1.5)
    assert (episode["vlm_latency"], episode["vlm_hz"]) == (latency, vlm_hz) and 0.0 <= latency <= 1.5
    sim_cfg = SimConfig(time_limit=6.0, task_set="hard")
    loop = ClosedLoopEpisode(sample_task(seed, sim_cfg), sim_cfg, LoopConfig(vlm_hz=vlm_hz, vlm_latency=latency),
                             *record_sim._policy(model))
    try:
        want = np.array(loop.run()["path"])
    finally:
        loop.close()
    assert len(want) > 30 and np.allclose(np.array(episode["path"]), want)
    spec = ModelSpec.load(model)
    rec = read_recording(tmp_path / f"episode_{seed:05d}", spec, TOPICS, TWIST)
    executed, expert = (np.stack([v for _, v in rows]) for rows in (rec.executed, rec.commands))
    assert len(executed) == len(expert) == len(rec.poses) > 100
    assert np.ptp(np.unwrap([yaw for _, (_, _, yaw) in rec.poses])) > 0.3  # it moved
    assert np.abs(executed - expert).max() > 0.1  # the policy drove, not the expert
    data = train.build_dataset([rec], [np.zeros((len(rec.images), spec.feature_dim), np.float32)], spec, 0.04,
                               TWIST, labels="sim-expert")
    samples = np.arange(len(data))
    labels = data.labels(samples, data.feature_index(samples, np.zeros(len(data))))
    assert len(data) > 50 and np.isfinite(labels).all() and np.abs(labels).max() > 0.1
