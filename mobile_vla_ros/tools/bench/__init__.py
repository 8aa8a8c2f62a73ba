"""Benchmarks (`mobile-vla-bench`): inference, VLM, control loop, soak, closed loop, doctor."""
