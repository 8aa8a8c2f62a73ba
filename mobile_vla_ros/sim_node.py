"""sim_node: the MuJoCo simulated robot as a ROS 2 node, for closed-loop runs of the policy nodes.

Publishes what the robot's drivers would (contract topics, so the policy nodes need no change):
`camera/image_raw` (rgb8, camera_hz), `sensor` (sensor_msgs/Imu from MuJoCo's gyro and
accelerometer, one sample per 1/650 s physics step), `instruction` (latched, one per episode);
subscribes `cmd_vel` (Twist, or TwistStamped with twist_stamped). For evaluation it also publishes
`sim/ground_truth_pose` (PoseStamped, 50 Hz), `sim/task` (JSON, latched) and one JSON line per
finished episode on `sim/episode_result`, and /diagnostics.

The simulation owns time: physics advances at real_time_factor x wall time in its own thread, and
with publish_clock (default) it publishes /clock and stamps everything in sim time, so the policy
nodes run with use_sim_time: true (bringup --sim and `robot.launch.py use_sim:=true` set it).
Episodes run back to back from `seed`; before each, the new scene is shown for episode_pause
seconds with the base held still, so the VLM sees it before the clock of the episode starts. Before
the first, it is shown until the policy publishes its first `action_chunk` as well (up to
policy_wait s): the policy nodes load their models meanwhile, and the first episode's time to target
would otherwise count their start-up (seconds, not control). The
clock runs on across episodes, or, with reset_clock, starts again at every episode (a world reset:
the policy nodes see a clock jump back each time).
"""

from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, Imu
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from .core.names import CHUNK_TOPIC
from .ros.conversions import rgb_to_image, sample_to_imu, sec_to_stamp
from .ros.node_support import LATCHED_QOS, SENSOR_QOS, diagnostics, diagnostics_timer, run_node
from .sim.episode import SimEpisode
from .sim.messages import FRAMES, SIM_EPOCH, TOPICS, result_json, task_json, yaw_quaternion
from .sim.world import SimConfig, sample_task

LOOP_PERIOD = 0.004  # s of wall time between physics catch-ups (and /clock messages: 250 Hz)
POSE_HZ = 50.0


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_node")
        p = {name: self.declare_parameter(name, default).value for name, default in (
            ("seed", 0), ("episodes", 0), ("time_limit", SimConfig.time_limit), ("camera_hz", SimConfig.camera_hz),
            ("image_size", SimConfig.image_size), ("real_time_factor", 1.0), ("episode_pause", 1.0),
            ("command_timeout", 0.5), ("publish_clock", True), ("twist_stamped", False), ("task_set", "standard"),
            ("reset_clock", False), ("policy_wait", 60.0))}
        if not 0.05 <= float(p["real_time_factor"]) <= 20.0:
            raise ValueError(f"real_time_factor: expected 0.05-20, got {p['real_time_factor']}")
        # sim_node evaluates: the hard set is phrased with the instructions never used in training.
        self.cfg = SimConfig.for_evaluation(str(p["task_set"]), float(p["time_limit"]),
                                            camera_hz=float(p["camera_hz"]), image_size=int(p["image_size"]))
        self.seed, self.episodes = int(p["seed"]), int(p["episodes"])
        self.rtf, self.pause = float(p["real_time_factor"]), float(p["episode_pause"])
        self.command_timeout, self.publish_clock = float(p["command_timeout"]), bool(p["publish_clock"])
        # reset_clock: every episode starts the clock again at SIM_EPOCH, as a simulator's world reset
        # does -- the policy nodes see a clock jump back at each episode (their clock-jump path).
        self.reset_clock = bool(p["reset_clock"])
        self.policy_wait = float(p["policy_wait"])
        self._policy_answered = threading.Event()
        self.policy_waited: float | None = None  # wall s the first scene waited for the policy's first chunk
        self.image_pub = self.create_publisher(Image, TOPICS["image"], SENSOR_QOS)
        self.imu_pub = self.create_publisher(Imu, TOPICS["sensor"], SENSOR_QOS)
        self.instruction_pub = self.create_publisher(String, TOPICS["instruction"], LATCHED_QOS)
        self.task_pub = self.create_publisher(String, TOPICS["task"], LATCHED_QOS)
        self.result_pub = self.create_publisher(String, TOPICS["episode_result"], 100)
        self.pose_pub = self.create_publisher(PoseStamped, TOPICS["pose"], 10)
        self.clock_pub = self.create_publisher(Clock, "/clock", QoSProfile(depth=1,
                                                                           reliability=ReliabilityPolicy.BEST_EFFORT))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        twist_type = TwistStamped if bool(p["twist_stamped"]) else Twist
        self.create_subscription(twist_type, TOPICS["cmd_vel"], self._on_cmd_vel, 10)
        self.create_subscription(JointTrajectory, CHUNK_TOPIC, lambda _: self._policy_answered.set(), 10)
        diagnostics_timer(self, self._publish_diagnostics)
        self._command = (0.0, 0.0, float("-inf"))  # v, w, wall time received
        self._lock = threading.Lock()
        self.counts = {"episodes_done": 0, "successes": 0, "imu_sent": 0, "images_sent": 0, "commands": 0}
        self._sim_offset = 0.0  # sim seconds of finished episodes (and pauses)
        self._running = True
        self._thread = threading.Thread(target=self._run_episodes, name="sim", daemon=True)
        self._thread.start()

    def _on_cmd_vel(self, msg) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        with self._lock:
            self._command = (float(twist.linear.x), float(twist.angular.z), time.monotonic())
            self.counts["commands"] += 1

    def _current_command(self) -> tuple[float, float]:
        with self._lock:
            v, w, received = self._command
        return (v, w) if time.monotonic() - received <= self.command_timeout else (0.0, 0.0)

    def _stamp(self, sim_t: float):
        """Sim time (with publish_clock) or wall time: the stamp of an event at episode time sim_t."""
        base = SIM_EPOCH + self._sim_offset if self.publish_clock else self._wall_base
        return sec_to_stamp(base + sim_t)

    def _run_episodes(self) -> None:
        self._wall_base = time.time()
        index = 0
        while self._running and (self.episodes <= 0 or index < self.episodes):
            task = sample_task(self.seed + index, self.cfg)
            episode = SimEpisode(task, self.cfg)
            try:
                self.task_pub.publish(String(data=task_json(task)))
                self.instruction_pub.publish(String(data=task.instruction))
                self._drive(episode, active=False, until=self.pause)
                if index == 0:
                    self._wait_for_policy(episode)
                episode.start()
                self._drive(episode, active=True, until=float("inf"))
            finally:
                episode.close()
            if not self._running:
                return
            result = episode.result()
            self.counts["episodes_done"] += 1
            self.counts["successes"] += int(result.success)
            self.result_pub.publish(String(data=result_json(result, index)))
            self.get_logger().info(f"episode {index} (seed {task.seed}) '{task.instruction}': "
                                   f"{'success' if result.success else 'failed'} after {result.duration:.1f} s")
            if not self.reset_clock:
                self._sim_offset += episode.time
            if not self.publish_clock:
                self._wall_base += episode.time
            index += 1
        self.get_logger().info(f"all {index} episodes done")

    def _wait_for_policy(self, episode: SimEpisode) -> None:
        """Keep showing the scene, the base still and the clock running (the nodes' timers run on it),
        until the policy's first chunk or policy_wait wall seconds."""
        began = time.monotonic()
        while (self._running and not self._policy_answered.is_set()
               and time.monotonic() - began < self.policy_wait):
            self._drive(episode, active=False, until=episode.time + 0.1)
        self.policy_waited = time.monotonic() - began
        if self._policy_answered.is_set():
            self.get_logger().info(f"the policy's first {CHUNK_TOPIC} came after {self.policy_waited:.1f} s more: "
                                   "the first episode starts")
        elif self._running:
            self.get_logger().warn(f"no {CHUNK_TOPIC} within policy_wait ({self.policy_wait:.0f} s): "
                                   "the first episode starts without the policy")

    def _drive(self, episode: SimEpisode, active: bool, until: float) -> None:
        """Advance `episode` at real_time_factor x wall time until it ends (active) or `until` s (pause)."""
        wall0, sim0 = time.monotonic(), episode.time
        next_pose = sim0
        while self._running and not episode.done and episode.before(until):
            target = sim0 + (time.monotonic() - wall0) * self.rtf
            v, w = self._current_command() if active else (0.0, 0.0)
            for event in episode.advance(v, w, min(target, until), active=active):
                stamp = self._stamp(event.t)
                if event.kind == "imu":
                    self.imu_pub.publish(sample_to_imu(event.data, stamp, FRAMES["sensor"]))
                    self.counts["imu_sent"] += 1
                else:
                    self.image_pub.publish(rgb_to_image(event.data, stamp, FRAMES["image"]))
                    self.counts["images_sent"] += 1
            if episode.time >= next_pose:
                self.pose_pub.publish(_pose_message(episode.robot.pose(), self._stamp(episode.time)))
                next_pose += 1.0 / POSE_HZ
            if self.publish_clock:
                self.clock_pub.publish(Clock(clock=self._stamp(episode.time)))
            time.sleep(LOOP_PERIOD)

    def _publish_diagnostics(self) -> None:
        done = self.counts["episodes_done"]
        values = {**self.counts, "success_rate": self.counts["successes"] / done if done else 0.0,
                  "sim_time_s": self._sim_offset, "real_time_factor": self.rtf,
                  "policy_waited_s": float("nan") if self.policy_waited is None else self.policy_waited}
        self.diag_pub.publish(diagnostics(self, DiagnosticStatus.OK, "simulating", values))

    def destroy_node(self) -> None:
        self._running = False
        self._thread.join(timeout=2.0)
        super().destroy_node()


def _pose_message(pose: tuple[float, float, float], stamp) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, FRAMES["pose"]
    msg.pose.position.x, msg.pose.position.y = pose[0], pose[1]
    q = yaw_quaternion(pose[2])
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = q
    return msg


def main(args=None) -> int:
    return run_node(SimNode, args, startup_errors=(ValueError,))


if __name__ == "__main__":
    raise SystemExit(main())
