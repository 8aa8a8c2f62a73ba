"""`mobile-vla-bench soak`: the async pipeline (real node processes, 650 Hz IMU, 10 Hz chunks) for
minutes, measured from outside: RSS over time, deadline misses, safe stops, crashes.

With `--faults` the system runs on sim time (synthetic_sources publishes /clock) and, after the
warm-up, one fault is injected every `fault_interval` seconds, in turn:

  clock_back      /clock jumps 10 s back (a bag loop, a simulator reset)
  clock_forward   /clock jumps 10 s forward (a bag skip)
  vlm_kill        vlm_node is SIGKILLed, and restarted once the stop is due (as a supervisor with a
                  health check would: see RESTART_ATTEMPTS)
  sensor_stall    the 650 Hz sensor stops for 2 s
  malformed_burst non-finite and zero-stamped IMU samples, VL features of the wrong size and
                  over-long instructions, interleaved with the good stream

Per fault it reports when the stop was due (the jump; the newest features' image stamp +
max_feature_age; the last sample's stamp + max_sensor_gap), the time from then to the first zero cmd_vel (the
rule: within one action period), chunks that came when none may (after the stop was due, or from
outside the clock's window after a jump), and the time from the fault's end to the first chunk of
the recovered system. A malformed burst must not stop anything: its messages are dropped and counted.
"""

from __future__ import annotations

import collections
import math
import signal
import threading
import time
from dataclasses import asdict

from ...core.names import CMD_VEL_TOPIC, FEATURES_TOPIC, SENSOR_FRAME
from ...core.params import ACTION_NODE_PARAMS, spec_by_name
from ...ros.conversions import stamp_to_sec
from ..bringup.processes import yaml_params
from ..ros_observer import ProcessSampler, diagnostics_of, wait_for
from .loop import (
    ASYNC,
    LoopConfig,
    LoopObserver,
    chunk_statistics,
    config_files,
    max_feature_age,
    process_summary,
    running_system,
    vlm_process,
)

FAULTS = ("clock_back", "clock_forward", "vlm_kill", "sensor_stall", "malformed_burst")
CLOCK_JUMP = 10.0
SENSOR_STALL = 2.0
DELIVERY = 0.02  # s: the observer and the node get the same message a few ms apart
# s: how far a node's clock may trail /clock's publisher when it publishes a chunk (its executor takes /clock
# among 650 sensor samples a second) before a window it holds counts as older than max_sensor_gap allows.
NODE_CLOCK_LAG = 0.1
RECOVERY_TIMEOUT = 60.0
CLOCK_READINGS = 20_000  # /clock readings kept: 80 s at synthetic_sources' 250 Hz, longer than any fault
# The restart is a supervisor's with a health check: on Fast DDS's shared-memory transport a node started
# after a SIGKILLed one can match its publishers and never receive their best-effort samples (images,
# /clock; eProsima/Fast-DDS#5053, #2811; 1 of 8 restarts here). A restart that has published no features
# after FIRST_FEATURES_TIMEOUT is killed and started again, up to RESTART_ATTEMPTS times.
RESTART_ATTEMPTS = 3
FIRST_FEATURES_TIMEOUT = 20.0  # s: model load (~4 s) and the first forward, with a margin for a loaded machine
# A restart that did publish features can lose its camera later (README, "Restarting a crashed node"), and a
# new subscription in the same process does not bring it back. Between faults the supervisor therefore also
# watches vlm_node's own report (`image_silence_s` on /diagnostics) and restarts it when the camera, which
# never stops in the soak, has been silent this long. It kills the node first: after a clean stop, 9
# restarts in a row received no image (the next process may take the stopped one's participant id and
# shared-memory port), while the vlm_kill fault's restart after SIGKILL received them at once.
SILENT_CAMERA_RESTART = 5.0  # s


def configured_max_sensor_gap() -> float:
    """max_sensor_gap as the soak's action node runs it: from the parameter files, else the default."""
    configured = yaml_params(config_files(), ("action_expert_node",)).get("max_sensor_gap")
    return float(configured if configured is not None
                 else spec_by_name(ACTION_NODE_PARAMS)["max_sensor_gap"].default)


class ClockTracker:
    """Follows /clock: the offset sim − the time of each reading (its arrival at the observer, monotonic, or
    its publication, system clock), and its changes (the jumps)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changes: list[tuple[float, float]] = []  # (arrival, new offset)
        self.readings: collections.deque[tuple[float, float]] = collections.deque(maxlen=CLOCK_READINGS)

    def __call__(self, msg) -> None:
        self.add(time.monotonic(), stamp_to_sec(msg.clock))

    def add(self, arrival: float, sim: float) -> None:
        """One /clock reading `sim` that arrived at monotonic time `arrival`. Between jumps the offset is
        the largest seen: a reading delivered late gives a smaller one, so the largest is the closest to
        the clock's (on a loaded machine the first reading after a jump can be tens of ms late)."""
        offset = sim - arrival
        with self.lock:
            self.readings.append((arrival, sim))
            # Delivery jitter moves the offset by ms; a jump moves it by seconds.
            if not self.changes or abs(offset - self.changes[-1][1]) > 0.5:
                self.changes.append((arrival, offset))
            elif offset > self.changes[-1][1]:
                self.changes[-1] = (self.changes[-1][0], offset)

    def sim_at(self, t: float) -> float:
        """Sim time at monotonic time t, as the clock then ran."""
        with self.lock:
            offset = next((o for arrival, o in reversed(self.changes) if arrival <= t), self.changes[0][1])
        return t + offset

    def monotonic_at(self, sim: float) -> float:
        with self.lock:
            return sim - self.changes[-1][1]

    def reached(self, sim: float) -> float | None:
        """Arrival of the first reading at or past `sim` on the present timeline (since the last jump): when
        the nodes' clocks got there. Later than `monotonic_at(sim)` when /clock stood still (its publisher
        stalled) across `sim`: time on the nodes' clocks did not pass meanwhile."""
        with self.lock:
            since = self.changes[-1][0] if self.changes else -math.inf
            return next((arrival for arrival, s in self.readings if arrival >= since and s >= sim), None)

    def jump_after(self, t: float) -> float | None:
        with self.lock:
            return next((arrival for arrival, _ in self.changes[1:] if arrival >= t), None)


def chunks_off_the_clock(clock: ClockTracker, chunks, max_sensor_gap: float) -> list[tuple[float, float]]:
    """The chunks, (publication time, sensor-window end stamp), whose window ends outside what the clock
    allowed when they were published: ahead of it, or older than max_sensor_gap (+ NODE_CLOCK_LAG).
    `clock` holds /clock's readings by their publication times, so the observer's own lag in taking
    messages (its one thread, a loaded machine) cannot make a fresh chunk look old."""
    return [(published, stamp) for published, stamp in chunks
            for now in (clock.sim_at(published),)
            if not now - max_sensor_gap - NODE_CLOCK_LAG <= stamp <= now + DELIVERY]


class SoakObserver(LoopObserver):
    """LoopObserver plus cmd_vel (zero or not), /clock, and publishers for the malformed burst."""

    def __init__(self, sim_time: bool = False) -> None:
        from geometry_msgs.msg import Twist
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, Imu
        from std_msgs.msg import String

        from ...ros.node_support import LATCHED_QOS, SENSOR_QOS

        super().__init__(sim_time=sim_time)
        self.commands = self.record(Twist, CMD_VEL_TOPIC, 100, lambda m: m.linear.x == 0.0 and m.angular.z == 0.0)
        self.clock = ClockTracker()  # by arrival: when the observer saw the clock (stops, recovery)
        self.published_clock = ClockTracker()  # by publication: what the clock said when a chunk was sent
        self.node.create_subscription(Clock, "/clock", self._on_clock,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.bad_sensor = self.node.create_publisher(Imu, "sensor", SENSOR_QOS)
        self.bad_features = self.node.create_publisher(Image, FEATURES_TOPIC, LATCHED_QOS)
        self.bad_instruction = self.node.create_publisher(String, "instruction", LATCHED_QOS)

    def _on_clock(self, msg, info) -> None:
        self.clock(msg)
        self.published_clock.add(info["source_timestamp"] * 1e-9, stamp_to_sec(msg.clock))

    def first_zero_after(self, t: float) -> float | None:
        return next((arrival for arrival, zero in self.commands.since(t) if zero), None)

    def first_chunk_after(self, t: float, timeout: float) -> float | None:
        try:
            wait_for(lambda: self.chunks.since(t), timeout, "a chunk")
        except TimeoutError:
            return None
        return self.chunks.since(t)[0][0]


class FaultInjector:
    """Injects one fault at a time into a running soak system and measures it from outside."""

    def __init__(self, cfg: LoopConfig, procs: dict, observer: SoakObserver, sampler: ProcessSampler,
                 log=print) -> None:
        self.cfg, self.procs, self.obs, self.sampler, self.log = cfg, procs, observer, sampler, log
        self.action_period = 1.0 / cfg.action_hz
        self.clock_offset = 0.0
        self.restarted_at: float | None = None  # the last vlm_node restart
        self.vlm_started = time.monotonic()  # the current vlm_node process (its diagnostics count from here)
        self.vlm_lock = threading.Lock()  # one restarter at a time: the vlm_kill fault or the supervisor
        self.supervisor_restarts: list[dict] = []
        self.windows: list[tuple[float, float]] = []  # (start, end) of each fault incl. recovery
        self.max_sensor_gap = configured_max_sensor_gap()

    def inject(self, fault: str) -> dict:
        start = time.monotonic()
        result = {"fault": fault, "at_s": start} | getattr(self, fault)()
        if result["stop_expected"] and result["time_to_recovery_s"] is None:  # what each node said, for the record
            result["diagnostics"] = {name: self.obs.latest_diagnostics(name) for name in self.procs}
            result["log_tails"] = {name: p.output()[-1500:] for name, p in self.procs.items()}
        # The loop is meant to stop from here until a second after it recovered: not a deadline miss.
        self.windows.append((start, result.pop("_window_end", time.monotonic())))
        return result

    # -- the faults -------------------------------------------------------------------------------
    def clock_back(self) -> dict:
        return self._clock_jump(-CLOCK_JUMP)

    def clock_forward(self) -> dict:
        return self._clock_jump(+CLOCK_JUMP)

    def _clock_jump(self, jump: float) -> dict:
        t_request = time.monotonic()
        self.clock_offset += jump
        self._set("synthetic_sources", "clock_offset", self.clock_offset)
        wait_for(lambda: self.obs.clock.jump_after(t_request) is not None, 5, "the jump on /clock")
        due = self.obs.clock.jump_after(t_request)
        recovered = self.obs.first_chunk_after(due + DELIVERY, RECOVERY_TIMEOUT)
        time.sleep(2.0)  # watch the new timeline's chunks for a while
        # Every chunk from one action period after the jump on (the node's own reaction time, as for the
        # zero command) is built on a window of the clock's present: not ahead, not old.
        sent = [(published, stamp) for published, (_, stamp, _) in
                self.obs.chunks.published_since(due + self.action_period)]
        wrong = chunks_off_the_clock(self.obs.published_clock, sent, self.max_sensor_gap)
        return self._measure(due, due, recovered, wrong_chunks=len(wrong)) | {"jump_s": jump}

    def vlm_kill(self) -> dict:
        with self.vlm_lock:
            return self._vlm_kill()

    def _vlm_kill(self) -> dict:
        self.procs["vlm_node"].stop(signal.SIGKILL)
        t_kill = time.monotonic()
        # The node stops when the newest features it holds get older than max_feature_age. Features
        # published just before the kill may still be in flight: the newest is read once they arrived.
        time.sleep(0.5)
        features = self.obs.features.since(0.0)
        deadline = (features[-1][1] if features else math.nan) + max_feature_age(self.cfg)
        time.sleep(max(0.0, self.obs.clock.monotonic_at(deadline) - time.monotonic()) + 1.0)
        due, stood_still = self._due(deadline)
        late = [a for a, _ in self.obs.chunks.since(due + self.action_period + DELIVERY)]
        t_restart = time.monotonic()
        attempts = self._restart_vlm_node()
        recovered = self.obs.first_chunk_after(t_restart, RECOVERY_TIMEOUT)
        extra = {"killed_to_due_s": due - t_kill, "clock_stood_still_s": stood_still, "restart_attempts": attempts,
                 "features_since_restart": len(self.obs.features.since(t_restart))}
        return self._measure(due, t_restart, recovered, wrong_chunks=len(late), late=late) | extra

    def _restart_vlm_node(self) -> int:
        """Start vlm_node again until it publishes features (RESTART_ATTEMPTS at most); the attempts made.
        Sets `restarted_at` when it returns."""
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            t = self.vlm_started = time.monotonic()
            self.procs["vlm_node"] = vlm_process(self.cfg)
            self.sampler.replace("vlm_node", self.procs["vlm_node"].pid)
            try:
                wait_for(lambda t=t: self.obs.features.since(t), FIRST_FEATURES_TIMEOUT, "features of the restart")
                self.restarted_at = time.monotonic()
                return attempt
            except TimeoutError:
                self.log(f"  vlm_node restart {attempt}: no features after {FIRST_FEATURES_TIMEOUT:.0f} s "
                         f"({self.obs.latest_diagnostics('vlm_node').get('_message', 'no diagnostics')}); "
                         "killing it")
                if attempt < RESTART_ATTEMPTS:
                    self.procs["vlm_node"].stop(signal.SIGKILL)  # see SILENT_CAMERA_RESTART
        self.restarted_at = time.monotonic()
        return RESTART_ATTEMPTS

    def supervise(self, stop: threading.Event) -> None:
        """The supervisor's health check, in its own thread until `stop`: a vlm_node whose camera has been
        silent for SILENT_CAMERA_RESTART s is killed and started again (recorded in supervisor_restarts)."""
        while not stop.wait(1.0):
            with self.vlm_lock:
                silent = self._camera_silence()
                if silent is None or silent < SILENT_CAMERA_RESTART:
                    continue
                t = time.monotonic()
                self.procs["vlm_node"].stop(signal.SIGKILL)  # see SILENT_CAMERA_RESTART
                attempts = self._restart_vlm_node()
                self.windows.append((t, self.restarted_at + 1.0))
                self.supervisor_restarts.append({"at_s": t, "camera_silent_s": silent, "restart_attempts": attempts,
                                                 "took_s": self.restarted_at - t})
                self.log(f"  supervisor: vlm_node's camera silent for {silent:.1f} s: restarted "
                         f"({attempts} attempt(s), {self.restarted_at - t:.1f} s)")

    def _camera_silence(self) -> float | None:
        """image_silence_s of the current vlm_node's newest diagnostics (None before it sent any)."""
        since = max(self.vlm_started, time.monotonic() - 3.0)
        reports = [d["vlm_node"] for _, m in self.obs.recorders["/diagnostics"].since(since)
                   if "vlm_node" in (d := diagnostics_of(m))]
        return float(reports[-1]["image_silence_s"]) if reports and "image_silence_s" in reports[-1] else None

    def sensor_stall(self) -> dict:
        from sensor_msgs.msg import Imu

        # The node's rule runs on the samples' stamps: the stop is due max_sensor_gap after the stamp of
        # the last sample sent, which the observer sees too (the parameter call's reply comes later, by
        # tens of ms on a loaded machine). Without one, the request is the earliest bound.
        with self.obs.recording_sensor(Imu, "sensor", lambda m: stamp_to_sec(m.header.stamp)) as samples:
            wait_for(lambda: samples.count() > 0, 5, "the sensor stream at the observer")
            t_request = time.monotonic()
            self._set("synthetic_sources", "sensor_enabled", False)
            time.sleep(SENSOR_STALL)
            t_end = time.monotonic()
            sent = samples.since(t_request - 1.0)
        due, stood_still = self._due(sent[-1][1] + self.max_sensor_gap) if sent else (
            t_request + self.max_sensor_gap, 0.0)
        late = [a for a, _ in self.obs.chunks.since(due + self.action_period + DELIVERY) if a < t_end]
        self._set("synthetic_sources", "sensor_enabled", True)
        recovered = self.obs.first_chunk_after(t_end, RECOVERY_TIMEOUT)
        return self._measure(due, t_end, recovered, wrong_chunks=len(late), late=late) | {
            "clock_stood_still_s": stood_still}

    def malformed_burst(self, n_sensor: int = 200) -> dict:
        from sensor_msgs.msg import Image, Imu
        from std_msgs.msg import Header, String

        from ...ros.conversions import sec_to_stamp

        before = self._fresh_diagnostics()
        t0 = time.monotonic()
        for i in range(n_sensor):  # half non-finite with a current stamp, half without a stamp
            msg = Imu(header=Header(stamp=sec_to_stamp(self.obs.clock.sim_at(time.monotonic())) if i % 2 else
                                    sec_to_stamp(0.0), frame_id=SENSOR_FRAME))
            msg.angular_velocity.z = float("nan") if i % 2 else 0.0
            self.obs.bad_sensor.publish(msg)
            if i % 10 == 0:
                self.obs.bad_features.publish(Image(header=Header(stamp=sec_to_stamp(self.obs.clock.sim_at(t0))),
                                                    height=1, width=3, encoding="32FC1", step=12, data=bytes(12)))
            if i % 40 == 0:
                self.obs.bad_instruction.publish(String(data="x" * 100_000))
            time.sleep(0.0025)
        t1 = time.monotonic()
        time.sleep(1.0)
        after = self._fresh_diagnostics()
        stops = int(after.get("safe_stop_events", 0)) - int(before.get("safe_stop_events", 0))
        zeros = [a for a, zero in self.obs.commands.since(t0) if zero and a < t1 + 1.0]
        chunks = len([a for a, _ in self.obs.chunks.since(t0) if a < t1])

        def grew(key: str) -> int:
            return int(after.get(key, 0)) - int(before.get(key, 0))

        return {"stop_expected": False, "safe_stop_events": stops, "zero_commands": len(zeros),
                "chunks_during_burst": chunks, "chunks_expected": round((t1 - t0) * self.cfg.action_hz),
                "sent": {"sensor": n_sensor, "features": n_sensor // 10, "instructions": n_sensor // 40},
                "dropped": {"sensor": grew("sensor_rejected"), "features": grew("features_rejected"),
                            "instructions": grew("instructions_rejected")},
                "time_to_zero_s": None, "time_to_recovery_s": None, "wrong_chunks": 0,
                "ok": stops == 0 and not zeros, "_window_end": t1 + 1.0}

    # -- helpers ---------------------------------------------------------------------------------
    def _due(self, deadline: float) -> tuple[float, float]:
        """When a stop at sim time `deadline` was due (monotonic), and how long /clock stood still across
        it: the nodes run on /clock, so the stop is due when their clock reached the deadline, which is
        later than the steady clock's estimate when the clock's publisher stalled (a starved process; a
        transport that blocks on a SIGKILLed peer is suspected for CI's one vlm_kill stop 1.5 s late)."""
        estimate = self.obs.clock.monotonic_at(deadline)
        if math.isnan(deadline):
            return estimate, 0.0
        wait_for(lambda: self.obs.clock.reached(deadline) is not None, 10, "/clock at the deadline")
        stood_still = max(0.0, self.obs.clock.reached(deadline) - DELIVERY - estimate)
        return estimate + stood_still, round(stood_still, 4)

    def _measure(self, due: float, fault_end: float, recovered: float | None, wrong_chunks: int,
                 late: list[float] | None = None) -> dict:
        """The stop is the first zero command after the last chunk of the fault's span: at or before
        `due` (it stopped for an earlier reason, e.g. the transport stalled at the kill) counts as 0.
        `late`: arrivals of the chunks that came after the stop was due, reported in s after due: one
        within a scheduling slot is a chunk sent in time and delivered late; a run of them is a node
        that kept going."""
        last_chunk = max((a for a, _ in self.obs.chunks.since(due - 60.0) if a <= due + DELIVERY),
                         default=due - DELIVERY)
        zero = self.obs.first_zero_after(last_chunk)
        time_to_zero = None if zero is None else max(0.0, zero - due)
        in_time = time_to_zero is not None and time_to_zero <= self.action_period
        return {"stop_expected": True, "time_to_zero_s": time_to_zero, "wrong_chunks": wrong_chunks,
                "time_to_recovery_s": None if recovered is None else recovered - fault_end,
                "ok": in_time and wrong_chunks == 0 and recovered is not None,
                "_window_end": (recovered or time.monotonic()) + 1.0,
                **({} if late is None else {"late_chunks_after_due_s": [round(a - due, 4) for a in late]}),
                "around_due": self._timeline(due, node_state=not in_time)}

    def _timeline(self, due: float, node_state: bool, before: float = 3.0, after: float = 3.0) -> dict:
        """What the observer saw from `before` s before `due` to `after` s after it, in s from due: for a
        stop that came late, whether the node went quiet (no chunks, no commands, no diagnostics), the
        clock stood still or jumped, or the node kept deciding. `node_state`: with the action node's
        newest diagnostics and the end of its log."""
        def rel(arrivals) -> list[float]:
            return [round(a - due, 3) for a in arrivals if due - before <= a <= due + after]

        with self.obs.clock.lock:
            clock_changes = [(round(a - due, 3), round(o, 3)) for a, o in self.obs.clock.changes]
            clock_arrivals = rel(a for a, _ in self.obs.clock.readings)
        # The longest wait between two /clock readings: the observer or the clock's publisher stalled there.
        clock_gap = max(zip(clock_arrivals, clock_arrivals[1:]), key=lambda ab: ab[1] - ab[0], default=None)
        timeline = {
            "chunks": rel(a for a, _ in self.obs.chunks.since(due - before)),
            "zero_commands": rel(a for a, zero in self.obs.commands.since(due - before) if zero)[:20],
            "moving_commands": rel(a for a, zero in self.obs.commands.since(due - before) if not zero)[-20:],
            "features": rel(a for a, _ in self.obs.features.since(due - before)),
            "action_node_diagnostics": rel(a for a, m in self.obs.recorders["/diagnostics"].since(due - before)
                                           if "action_expert_node" in diagnostics_of(m)),
            "clock_offset_changes": clock_changes[-6:],
            "longest_clock_gap": None if clock_gap is None else {"from": clock_gap[0],
                                                                  "seconds": round(clock_gap[1] - clock_gap[0], 3)}}
        if node_state:
            timeline |= {"action_node_latest_diagnostics": self.obs.latest_diagnostics("action_expert_node"),
                         "action_node_log_tail": self.procs["action_expert_node"].output()[-1500:]}
        return timeline

    def _set(self, node: str, name: str, value) -> None:
        result = self.obs.set_param(f"/{node}", name, value)
        if not result.successful:
            raise RuntimeError(f"{node} refused {name}={value}: {result.reason}")

    def _fresh_diagnostics(self) -> dict:
        """The action node's diagnostics from a cycle that began after this call."""
        t = time.monotonic()
        recorder = self.obs.recorders["/diagnostics"]
        wait_for(lambda: any("action_expert_node" in diagnostics_of(m) for _, m in recorder.since(t)), 5,
                 "fresh diagnostics")
        return self.obs.latest_diagnostics("action_expert_node")


def run_soak(minutes: float, cpu_burners: int, sensor_hz: float, action_hz: float = 10.0,
             sample_every: float = 5.0, faults: bool = False, fault_interval: float = 60.0,
             warmup: float | None = None, log=print) -> dict:
    """The async pipeline at full rate for `minutes`; RSS is compared after `warmup` s (default: the
    first 20 %, at least 30 s: allocator pools, DDS buffers and ORT arenas fill up first). With
    `faults`, one fault every `fault_interval` s after the warm-up (module docstring), and the run goes on
    past `minutes` until each fault has been injected once."""
    cfg = LoopConfig(mode=ASYNC, vlm_latency=0.3, sensor_hz=sensor_hz, action_hz=action_hz,
                     seconds=minutes * 60.0, cpu_burners=cpu_burners, sim_time=faults)
    crashes: dict[str, int] = {}
    fault_results: list[dict] = []
    with running_system(cfg, SoakObserver) as (procs, observer):
        sampler = ProcessSampler({name: p.pid for name, p in procs.items()})
        injector = FaultInjector(cfg, procs, observer, sampler, log)
        stop_supervisor = threading.Event()
        if faults:
            threading.Thread(target=injector.supervise, args=(stop_supervisor,), name="supervisor", daemon=True).start()
        t0 = time.monotonic()
        warmup = max(30.0, 0.2 * cfg.seconds) if warmup is None else warmup
        stops_at_warmup = None
        rss_at_warmup: dict[str, float] = {}
        next_report, next_fault = t0 + 60.0, t0 + warmup + 5.0
        sampler.sample()
        tick = min(sample_every, fault_interval) if faults else sample_every  # faults come on time
        while time.monotonic() - t0 < cfg.seconds or (faults and len(fault_results) < len(FAULTS)):
            time.sleep(tick)
            sampler.sample()
            for name, p in procs.items():
                if not p.alive() and name not in crashes and not (name == "vlm_node" and p.proc.returncode
                                                                   == -signal.SIGKILL):
                    crashes[name] = p.proc.returncode
                    log(f"  {name} exited with code {p.proc.returncode}")
            elapsed = time.monotonic() - t0
            if stops_at_warmup is None and elapsed >= warmup:
                stops_at_warmup = int(observer.latest_diagnostics("action_expert_node").get("safe_stop_events", 0))
                rss_at_warmup = {n: s[-1][2] for n, s in sampler.samples.items() if s}
            # Every fault once, however long the faults before it took on a loaded machine; then no fault
            # in the run's last half interval, which would end before its recovery is seen.
            if faults and time.monotonic() >= next_fault and (len(fault_results) < len(FAULTS)
                                                               or cfg.seconds - elapsed > fault_interval / 2):
                fault = FAULTS[len(fault_results) % len(FAULTS)]
                result = injector.inject(fault)
                result["at_s"] -= t0
                fault_results.append(result)
                log(f"  {elapsed / 60:.1f} min: {fault_line(result)}")
                next_fault = time.monotonic() + fault_interval
            if time.monotonic() >= next_report:
                next_report += 60.0
                rss = ", ".join(f"{n} {s[-1][2]:.0f} MB" for n, s in sampler.samples.items() if s)
                log(f"  {elapsed / 60:.0f} min: {observer.chunks.count()} chunks, RSS {rss}")
        stop_supervisor.set()
        with injector.vlm_lock:  # a restart in progress finishes first
            t1 = time.monotonic()
        diag = observer.latest_diagnostics("action_expert_node")
        stats = chunk_statistics([c for c in observer.chunks.since(t0) if c[0] <= t1],
                                 observer.features.since(0.0), action_hz, exclude=injector.windows)
        periods = stats.get("chunks", 0) - 1
        rss = {}
        for name, samples in sampler.samples.items():
            base = rss_at_warmup.get(name)
            if name == "vlm_node" and injector.restarted_at is not None:
                # A new process since the last kill: its own warm-up is the same 30 s at least.
                base = next((r for t, _, r in samples if t >= injector.restarted_at + 30.0), None)
            if samples and base:
                end = samples[-1][2]
                rss[name] = {"after_warmup_mb": base, "end_mb": end, "growth_percent": 100.0 * (end - base) / base,
                             "series_mb": [(round(t - t0, 1), round(r, 1)) for t, _, r in samples]}
        return {
            "config": asdict(cfg), "warmup_s": warmup, **stats,
            "deadline_miss_percent": 100.0 * stats.get("deadline_misses", 0) / max(periods, 1),
            "safe_stop_events_after_warmup": int(diag.get("safe_stop_events", 0)) - (stops_at_warmup or 0),
            "crashes": crashes, "rss": rss, "processes": process_summary(sampler),
            "policy_diagnostics": diag, "faults": fault_results, "fault_summary": fault_summary(fault_results),
            "supervisor_restarts": [r | {"at_s": r["at_s"] - t0} for r in injector.supervisor_restarts],
        }


def fault_line(r: dict) -> str:
    if not r["stop_expected"]:
        return (f"{r['fault']}: {'ok' if r['ok'] else 'FAILED'}, {r['safe_stop_events']} stops, dropped "
                f"{r['dropped']}")
    zero = "never" if r["time_to_zero_s"] is None else f"{r['time_to_zero_s'] * 1e3:.0f} ms"
    rec = "never" if r["time_to_recovery_s"] is None else f"{r['time_to_recovery_s']:.2f} s"
    restarts = f" ({r['restart_attempts']} restarts)" if r.get("restart_attempts", 1) > 1 else ""
    still = r.get("clock_stood_still_s", 0.0)
    clock = f" (/clock stood still {still:.2f} s across the deadline)" if still > 0.05 else ""
    return f"{r['fault']}: {'ok' if r['ok'] else 'FAILED'}, zero after {zero}{clock}, recovered after {rec}" \
           f"{restarts}, {r['wrong_chunks']} chunks when none may come"


def fault_summary(results: list[dict]) -> dict:
    out = {}
    for fault in FAULTS:
        rs = [r for r in results if r["fault"] == fault]
        if not rs:
            continue
        zeros = [r["time_to_zero_s"] for r in rs if r.get("time_to_zero_s") is not None]
        recoveries = [r["time_to_recovery_s"] for r in rs if r.get("time_to_recovery_s") is not None]
        out[fault] = {"count": len(rs), "ok": sum(r["ok"] for r in rs),
                      "time_to_zero_max_s": max(zeros) if zeros else None,
                      "time_to_recovery_max_s": max(recoveries) if recoveries else None,
                      "wrong_chunks": sum(r.get("wrong_chunks", 0) for r in rs),
                      "repeated_restarts": sum(r.get("restart_attempts", 1) - 1 for r in rs),
                      "clock_stood_still_max_s": max((r.get("clock_stood_still_s", 0.0) for r in rs), default=0.0)}
    return out


def soak_table(result: dict) -> str:
    c = result["config"]
    lines = [f"soak: {c['seconds'] / 60:.1f} min, sensor {c['sensor_hz']:.0f} Hz, action {c['action_hz']:.0f} Hz, "
             f"{c['cpu_burners']} CPU burners{', faults injected' if result['faults'] else ''}",
             "| quantity | value |", "|---|---|",
             f"| chunks | {result.get('chunks', 0)} ({result.get('chunks_per_s', 0):.2f}/s) |",
             f"| period p50 / p99 / max ms | {result['period_ms']['p50']:.1f} / {result['period_ms']['p99']:.1f} / "
             f"{result['period_ms']['max']:.1f} |",
             f"| period error p99 ms | {result['period_error_ms']['p99']:.2f} |",
             f"| deadline misses (period > 1.5 x nominal{', outside faults' if result['faults'] else ''}) | "
             f"{result['deadline_misses']} ({result['deadline_miss_percent']:.3f} %) |",
             f"| safe-stop events after warm-up | {result['safe_stop_events_after_warmup']} |",
             f"| crashes | {len(result['crashes'])} |"]
    if result["faults"]:
        lines.append(f"| supervisor restarts (vlm_node's camera silent) | {len(result['supervisor_restarts'])} |")
    for name, r in result["rss"].items():
        lines.append(f"| RSS {name}: after warm-up -> end | {r['after_warmup_mb']:.0f} -> {r['end_mb']:.0f} MB "
                     f"({r['growth_percent']:+.1f} %) |")
    if result["faults"]:
        lines += ["", "| fault | injected | ok | max time to zero cmd_vel | max time to recovery | "
                  "chunks when none may come |", "|---|---|---|---|---|---|"]
        for fault, s in result["fault_summary"].items():
            zero = "none due" if s["time_to_zero_max_s"] is None else f"{s['time_to_zero_max_s'] * 1e3:.0f} ms"
            rec = "-" if s["time_to_recovery_max_s"] is None else f"{s['time_to_recovery_max_s']:.2f} s"
            lines.append(f"| {fault} | {s['count']} | {s['ok']} | {zero} | {rec} | {s['wrong_chunks']} |")
    return "\n".join(lines)

