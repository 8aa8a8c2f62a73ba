"""Action labels for recorded simulator episodes from the expert that knows what the policy knows.

A training sample gives the action expert the features of one image (taken `feature age` s before
the sample) and the motion since it. The expert recorded in the bag acted on its memory of every
sighting, so where the sample's image predates the sighting (or the robot has since turned past
the target) its label asks for a turn the sample's inputs cannot explain; at a 1.5 s VLM that
is most of the search. `informed_chunks` relabels a sample with `image_informed_command` instead:
whether the target was in that image, where it is now (ground truth, which the policy infers from
the image and the motion since) and how far the robot has turned since the image. Over the chunk the
command is rolled out on a unicycle model from the sample's pose, as the recorded labels cover the
chunk's span. Pure numpy; the trainer builds the arrays from the bag's ground-truth topics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.motion import arc_step
from .episode import IN_VIEW, image_informed_command
from .world import bearing_and_distance, in_view

# The Twist fields the sim expert commands, in the order of its (v, w) labels.
EXPERT_FIELDS = ("linear.x", "angular.z")


def target_in_view(x, y, yaw, target, band: float = IN_VIEW) -> np.ndarray:
    """Whether an image taken at this pose shows the target (within `band` of the camera axis)."""
    return in_view(bearing_and_distance(x, y, yaw, target)[0], band)


def perceived_target(robot, band: float = IN_VIEW) -> np.ndarray:
    """Ground-truth perception of the image taken now: [it shows the target (within `band`; the
    labels' IN_VIEW by default), the robot's unwrapped yaw]."""
    target = robot.task.target_object
    shows = target_in_view(*robot.pose(), (target.x, target.y, target.radius), band)
    return np.array([float(shows), robot.unwrapped_yaw])


def informed_command(robot, perceived) -> tuple[float, float]:
    """`image_informed_command` for the robot now, acting on `perceived` (`perceived_target` of its image)."""
    in_image, yaw_at_image = perceived
    v, w = image_informed_command(robot.target_bearing(), robot.target_distance(), bool(in_image),
                                  robot.unwrapped_yaw - yaw_at_image)
    return float(v), float(w)


def informed_chunks(pose: np.ndarray, target: np.ndarray, in_image: np.ndarray, yaw_at_image: np.ndarray,
                    steps: int, dt: float) -> np.ndarray:
    """[B, steps, 2] (v, w) labels for samples at `pose` [B, 3] (x, y, unwrapped yaw) whose features
    come from an image that showed the target (`in_image` [B]) taken at unwrapped yaw `yaw_at_image`."""
    x, y, yaw = (np.array(pose[:, i], dtype=np.float64) for i in range(3))
    out = np.empty((len(pose), steps, 2))
    for k in range(steps):
        bearing, distance = bearing_and_distance(x, y, yaw, target)
        v, w = image_informed_command(bearing, distance, in_image, yaw - yaw_at_image)
        out[:, k, 0], out[:, k, 1] = v, w
        dx, dy, dyaw = arc_step(yaw, v, w, dt)  # the motion input's kinematics
        x, y, yaw = x + dx, y + dy, yaw + dyaw
    return out


@dataclass
class InformedLabels:
    """What `informed_chunks` needs for a dataset's samples and images (global indices, as the
    trainer's concatenated arrays)."""

    sample_pose: np.ndarray          # [S, 3] x, y, unwrapped yaw at each sample time
    sample_target: np.ndarray        # [S, 3] target x, y, radius of the sample's episode
    image_shows_target: np.ndarray   # [N_img] bool
    image_yaw: np.ndarray            # [N_img] unwrapped yaw when the image was taken
    image_target_xy: np.ndarray      # [N_img, 2] the target's centre in the body frame at the image (m)

    @classmethod
    def of_episode(cls, pose_times: np.ndarray, poses: np.ndarray, target: tuple[float, float, float],
                   image_times: np.ndarray, sample_times: np.ndarray) -> InformedLabels:
        """From one episode's ground-truth poses [N, 3] (yaw wrapped, as recorded at 50 Hz) at
        increasing `pose_times`, its target and the times of its images and samples."""
        yaw = np.unwrap(poses[:, 2])  # the base turns at most 0.02 rad between poses

        def at(times):
            return np.stack([np.interp(times, pose_times, poses[:, 0]), np.interp(times, pose_times, poses[:, 1]),
                             np.interp(times, pose_times, yaw)], axis=1)

        image_pose, target_row = at(image_times), np.asarray(target, dtype=np.float64)
        bearing, distance = bearing_and_distance(*image_pose.T, target_row)
        centre = distance + target_row[2]
        return cls(at(sample_times), np.tile(target_row, (len(sample_times), 1)),
                   target_in_view(*image_pose.T, target_row), image_pose[:, 2],
                   np.stack([centre * np.cos(bearing), centre * np.sin(bearing)], axis=1))

    @classmethod
    def concatenate(cls, parts: list[InformedLabels]) -> InformedLabels:
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("sample_pose", "sample_target", "image_shows_target", "image_yaw", "image_target_xy")))

    def chunks(self, samples: np.ndarray, image_index: np.ndarray, steps: int, dt: float,
               turn: np.ndarray | None = None) -> np.ndarray:
        """[B, steps, 2] (v, w) labels of `samples` acting on the images `image_index`; `turn` [B] (rad):
        label the robot as if it had turned that much further in place before the sample."""
        pose = self.sample_pose[samples]
        if turn is not None:
            pose = pose.copy()
            pose[:, 2] += turn
        return informed_chunks(pose, self.sample_target[samples], self.image_shows_target[image_index],
                               self.image_yaw[image_index], steps, dt)

    def image_geometry(self, image_index: np.ndarray) -> np.ndarray:
        """[B, 3] float32 targets of the action expert's geometry head for these images: whether the
        image shows the target, and its centre (x, y) in the body frame at the image (m)."""
        return np.concatenate([self.image_shows_target[image_index, None], self.image_target_xy[image_index]],
                              axis=1).astype(np.float32)
