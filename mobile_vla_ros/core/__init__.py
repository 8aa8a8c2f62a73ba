"""ROS-free core: feature cache, sensor window, scheduling, chunk execution, safety, backends."""
