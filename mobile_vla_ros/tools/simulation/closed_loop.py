"""Closed-loop episodes of the simulated robot driven in-process, in sim time, by the robot's code.

The pieces are those the nodes run: `VlmScheduler` (which frames and instruction a forward uses),
the VLM extractor, `ActionExpertCore` (feature cache, sensor window, motion since the image,
safety gates, backend) and `ChunkExecutor` (step by time, limits last). What the nodes get from
threads and DDS is modelled in sim time: `VirtualTimeVlm` (shared with offline replay) makes a
forward's features arrive `vlm_latency` s after it started (the forward itself really runs), skips a
VLM tick that finds the forward busy and starts the next forward when it ends; the action tick runs
at `action_hz` and `cmd_vel` at `execute_hz`. Time stands still during a forward, so the result does
not depend on this machine's speed: the same seed gives the same episode, faster than real time.

Modes: `async` (the two nodes: chunks at action_hz on the newest features) and `sync` (the
synchronous loop of sync_baseline_node: the VLM ticks at SYNC_LOOP_VLM_HZ, every decision waits for
a forward on the newest image, then runs the action core once; the robot executes that one chunk
and waits for the next decision); `sync-at-vlm-hz` (the same loop with its VLM at `vlm_hz`: the
split's VLM compute, where `sync` gets as many forwards as it can use).

`mobile-vla-bench closed-loop` runs the matrix of modes and VLM latencies on this; the main job
(`mobile-vla-bringup --sim`) and `--mode sync` run the same episodes through the real nodes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ...core.action_pipeline import ActionExpertCore
from ...core.chunk_executor import ChunkExecutor
from ...core.model_spec import ModelSpec
from ...core.motion import twist_components
from ...core.params import ACTION_NODE_PARAMS, SIM_POLICY_MODES, SYNC_LOOP_VLM_HZ, VLM_NODE_PARAMS, spec_by_name
from ...core.safety import feature_age_limit
from ...core.vlm_schedule import CameraFrame, VirtualTimeVlm, VlmScheduler
from ...sim.episode import SimEpisode
from ...sim.expert_labels import informed_command, perceived_target
from ...sim.messages import SIM_EPOCH
from ...sim.world import SimConfig, sample_task

_ACTION = spec_by_name(ACTION_NODE_PARAMS)
_VLM = spec_by_name(VLM_NODE_PARAMS)


@dataclass
class LoopConfig:
    mode: str = "async"
    vlm_hz: float = 3.33
    vlm_latency: float = 0.0           # s from a forward's start to its features (>= the real forward)
    action_hz: float = 10.0
    execute_hz: float = float(_ACTION["execute_hz"].default)
    max_feature_age: float | None = None  # None: feature_age_limit(latency, vlm_hz)
    max_sensor_gap: float = float(_ACTION["max_sensor_gap"].default)
    max_image_age: float = float(_VLM["max_image_age"].default)
    action_limits: tuple[float, ...] = tuple(_ACTION["action_limits"].default)
    max_action_step: tuple[float, ...] = tuple(_ACTION["max_action_step"].default)
    twist_mapping: tuple[str, ...] = tuple(_ACTION["twist_mapping"].default)
    episode_pause: float = 1.0         # s the scene is shown with the base still (sim_node's episode_pause)

    def __post_init__(self) -> None:
        if self.mode not in SIM_POLICY_MODES:
            raise ValueError(f"mode: expected one of {', '.join(SIM_POLICY_MODES)}, got {self.mode!r}")
        if self.max_feature_age is None:
            self.max_feature_age = feature_age_limit(self.vlm_latency, self.vlm_hz)


class ClosedLoopEpisode:
    """One episode: the sim, the VLM schedule and the action core advanced event by event."""

    def __init__(self, task, sim_cfg: SimConfig, cfg: LoopConfig, spec: ModelSpec, backend, extractor) -> None:
        self.spec = spec
        self.core = ActionExpertCore(spec, backend, cfg.max_feature_age, cfg.max_sensor_gap, cfg.twist_mapping)
        self.executor = ChunkExecutor(spec.action_dim, cfg.action_limits, cfg.max_action_step)
        self._start_loop(SimEpisode(task, sim_cfg), cfg, extractor.extract, spec.action_dim)

    def _start_loop(self, episode: SimEpisode, cfg: LoopConfig, extract, action_dim: int) -> None:
        self.cfg, self.episode = cfg, episode
        self.schedule = VlmScheduler(cfg.max_image_age)
        self.vlm = VirtualTimeVlm(self.schedule, extract, cfg.vlm_latency)
        # The VLM timer's phase relative to the episode is arbitrary on a robot: drawn from the seed.
        self.vlm_phase = float(np.random.default_rng([episode.task.seed, 7]).uniform(0, 1.0 / cfg.vlm_hz))
        self.command = np.zeros(action_dim, dtype=np.float32)
        self.commands: list[np.ndarray] = []
        self.chunks = 0
        self.ages: list[float] = []
        self.started = False

    def clock(self, t: float) -> float:
        """ROS-time stamp of sim time t (the sim's epoch, as sim_node stamps)."""
        return SIM_EPOCH + t

    # -- VLM ------------------------------------------------------------------------------------
    def _finish_forward(self) -> None:
        done = self.vlm.finish()
        if done.current:
            self.core.on_features(done.features, done.inputs.newest.stamp, done.ready)
            if self.cfg.mode != "async":
                self._decide(done.ready - SIM_EPOCH)

    # -- action ---------------------------------------------------------------------------------
    def _decide(self, t: float) -> None:
        result = self.core.tick(self.clock(t))
        if result.chunk is None:
            self.executor.reset_to_zero()
            return
        self.executor.set_chunk(result.chunk)
        self.chunks += 1
        self.ages.append(result.feature_age)

    def _execute(self, t: float) -> None:
        if self.core.safety.stopped and self.cfg.mode == "async":
            self.command = np.zeros(self.spec.action_dim, dtype=np.float32)
        else:
            self.command = self.executor.command(self.clock(t))
        self.core.on_executed(self.command)
        if self.started and not self.episode.done:
            self.commands.append(self.command.copy())

    # -- episode --------------------------------------------------------------------------------
    def _feed(self, events) -> None:
        for event in events:
            stamp = self.clock(event.t)
            if event.kind == "imu":
                self._on_sensor(stamp, event.data)
            else:
                self.vlm.add_frame("camera", CameraFrame(event.data, stamp, "camera"), stamp)

    def _on_sensor(self, stamp: float, sample: np.ndarray) -> None:
        self.core.on_sensor(stamp, sample, stamp)

    def _on_instruction(self, instruction: str, stamp: float) -> None:
        self.core.on_instruction(instruction, stamp)

    def run(self) -> dict:
        cfg, episode = self.cfg, self.episode
        instruction_at = episode.time
        self.schedule.set_instruction(episode.task.instruction, self.clock(instruction_at))
        self._on_instruction(episode.task.instruction, self.clock(instruction_at))
        vlm_hz = SYNC_LOOP_VLM_HZ if cfg.mode == "sync" else cfg.vlm_hz
        periods = {"execute": 1.0 / cfg.execute_hz, "action": 1.0 / cfg.action_hz, "vlm": 1.0 / vlm_hz}
        next_at = {"execute": 0.0, "action": periods["action"], "vlm": self.vlm_phase}
        if cfg.mode != "async":
            next_at.pop("action")
        while not episode.done:
            due = dict(next_at)
            if self.vlm.pending is not None:
                due["forward_done"] = self.vlm.next_ready - SIM_EPOCH
            kind = min(due, key=due.get)
            t = due[kind]
            if not self.started and t >= cfg.episode_pause:
                self._feed(episode.advance(0.0, 0.0, cfg.episode_pause, active=False))
                episode.start()
                self.started = True
            if self.started:
                v, w = (float(x) for x in self._twist(self.command))
                self._feed(episode.advance(v, w, t))
            else:
                self._feed(episode.advance(0.0, 0.0, t, active=False))
            if episode.done:
                break
            if kind == "forward_done":
                self._finish_forward()
                continue
            next_at[kind] += periods[kind]
            if kind == "execute":
                self._execute(t)
            elif kind == "action":
                self._decide(t)
            else:
                self.vlm.tick(self.clock(t))
        return self._summary()

    def _twist(self, command: np.ndarray) -> tuple[float, float]:
        return twist_components(command, self.cfg.twist_mapping)

    def _summary(self) -> dict:
        result = self.episode.result().to_dict()
        cmds = np.asarray(self.commands) if self.commands else np.zeros((1, len(self.command)))
        return {**result, **path_summary(result, self.episode.task, self.episode.cfg),
                "smoothness": float(np.mean(np.abs(np.diff(cmds, axis=0)))) if len(cmds) > 1 else 0.0,
                "forwards": self.vlm.counts["forwards"], "chunks": self.chunks,
                "feature_age_p50": float(np.median(self.ages)) if self.ages else None}

    def close(self) -> None:
        self.episode.close()


# An episode that failed ended in one of three ways, which say whether perception or control failed:
# at another object (it took that one for the target), in place (it never drove off: still searching
# for a target it did not see), or elsewhere.
OUTCOMES = ("target", "wrong_object", "in_place", "elsewhere")
IN_PLACE_PATH = 0.5  # m of path: less, and the base only turned


def path_summary(result: dict, task, cfg: SimConfig) -> dict:
    """Path length, its ratio to the straight line from the start to the success radius, and the
    episode's outcome (OUTCOMES; "wrong_object": within the success radius of another object)."""
    path = np.asarray(result["path"])
    length = float(np.sum(np.hypot(*np.diff(path, axis=0).T))) if len(path) > 1 else 0.0
    x0, y0, _ = task.start
    target = task.target_object
    straight = max(math.hypot(target.x - x0, target.y - y0) - target.radius - cfg.success_radius, 1e-6)
    x, y = path[-1][:2] if len(path) else (x0, y0)
    if result["success"]:
        outcome = "target"
    elif length < IN_PLACE_PATH:
        outcome = "in_place"
    elif any(math.hypot(o.x - x, o.y - y) - o.radius <= cfg.success_radius
             for i, o in enumerate(task.objects) if i != task.target):
        outcome = "wrong_object"
    else:
        outcome = "elsewhere"
    return {"path_ratio": length / straight, "path_length": length, "outcome": outcome}


class InformedExpertEpisode(ClosedLoopEpisode):
    """The rule the action expert is trained on (`sim.episode.image_informed_command`) in place of
    the VLM and the action expert, with ground-truth perception of each image the VLM schedule
    delivers: the same VLM timer, phase, episode pause, skipped ticks, catch-up and max_image_age as
    the policy's episodes, and a decision at each action tick on the newest perception, executed
    as is (no chunk, no smoothing). The robot stands still until the first perception arrives."""

    def __init__(self, task, sim_cfg: SimConfig, cfg: LoopConfig) -> None:
        episode = SimEpisode(task, sim_cfg, render=False, frame_source=perceived_target)
        self._start_loop(episode, cfg, lambda frames, instruction: frames[-1], action_dim=2)
        self.perceived: np.ndarray | None = None

    def _on_sensor(self, stamp: float, sample: np.ndarray) -> None:
        pass

    def _on_instruction(self, instruction: str, stamp: float) -> None:
        pass

    def _finish_forward(self) -> None:
        done = self.vlm.finish()
        if done.current:
            self.perceived = done.features

    def _decide(self, t: float) -> None:
        if self.perceived is None:
            return
        self.command = np.array(informed_command(self.episode.robot, self.perceived), dtype=np.float32)
        self.chunks += 1

    def _execute(self, t: float) -> None:
        if self.started and not self.episode.done:
            self.commands.append(self.command.copy())


def informed_expert_episodes(seeds: list[int], sim_cfg: SimConfig, vlm_latency: float, vlm_hz: float,
                             progress=None) -> list[dict]:
    """`InformedExpertEpisode` for `seeds`: what the labels teach, followed exactly, on the images this
    VLM latency and rate deliver; an upper bound of the learned policy. No command smoothness.
    `progress(done, rows)` after each episode, as in `run_episodes`."""
    rows = []
    for i, seed in enumerate(seeds):
        loop = InformedExpertEpisode(sample_task(seed, sim_cfg), sim_cfg, LoopConfig(vlm_hz=vlm_hz,
                                                                                      vlm_latency=vlm_latency))
        try:
            rows.append({**loop.run(), "smoothness": None})
        finally:
            loop.close()
        if progress is not None:
            progress(i + 1, rows)
    return rows


def load_policy(model_dir) -> tuple:
    """(spec, backend, extractor) of the model in `model_dir` as the closed loop runs it: ONNX Runtime and
    its VLM on the CPU in FP32."""
    from ...core.backend_factory import create_backend
    from ...vlm.base import ExtractorConfig
    from ...vlm.factory import create_extractor

    spec = ModelSpec.load(model_dir)
    backend = create_backend("onnxruntime", model_dir, spec)
    extractor = create_extractor(ExtractorConfig(backend=spec.vlm_backend, pooling=spec.vlm_pooling,
                                                 model_path=str(model_dir / "vlm"), device="cpu", dtype="fp32"))
    return spec, backend, extractor


def run_episodes(seeds: list[int], sim_cfg: SimConfig, cfg: LoopConfig, model_dir, progress=None) -> list[dict]:
    """Closed-loop episodes for `seeds` with the model in `model_dir` (`load_policy`); `progress(done,
    rows)` after each episode."""
    spec, backend, extractor = load_policy(model_dir)
    rows = []
    for i, seed in enumerate(seeds):
        began = time.monotonic()
        loop = ClosedLoopEpisode(sample_task(seed, sim_cfg), sim_cfg, cfg, spec, backend, extractor)
        try:
            rows.append({**loop.run(), "wall_seconds": time.monotonic() - began})
        finally:
            loop.close()
        if progress is not None:
            progress(i + 1, rows)
    return rows
