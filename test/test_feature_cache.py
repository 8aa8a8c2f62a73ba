"""Feature cache: age, and features of an earlier instruction never used."""

import numpy as np

from mobile_vla_ros.core.feature_cache import FeatureCache

F = np.ones((1, 4), dtype=np.float32)


def test_age_is_measured_from_the_source_image_stamp():
    cache = FeatureCache()
    assert cache.age(10.0) is None
    cache.set_instruction("go", now=1.0)
    assert cache.update(F, source_stamp=2.0)
    assert cache.age(3.5) == 1.5
    assert cache.latest().instruction == "go"


def test_instruction_change_drops_features_and_rejects_older_ones():
    cache = FeatureCache()
    cache.set_instruction("go to red", now=1.0)
    cache.update(F, 1.5)
    assert not cache.set_instruction("go to red", now=2.0)  # same text: nothing changes
    assert cache.latest() is not None
    assert cache.set_instruction("go to blue", now=3.0)
    assert cache.latest() is None
    assert not cache.update(F, 2.9)  # from an image taken before the new instruction arrived
    assert cache.rejected_old_instruction == 1
    assert cache.update(F * 2, 3.1)
    assert cache.latest().instruction == "go to blue"
