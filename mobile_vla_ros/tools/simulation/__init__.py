"""The simulated robot driven in process (closed loop in sim time) and recorded (`mobile-vla-record-sim`)."""
