"""Starting the nodes (`mobile-vla-bringup`): child processes, the simulated-robot job, the synthetic
stand-in robot, the synchronous baseline node."""
