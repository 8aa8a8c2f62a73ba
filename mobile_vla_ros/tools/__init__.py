"""The tools built on the core, one package per job: `bringup`, `training`, `evaluation`, `simulation`,
`bench`, `deploy`; shared by them: `recordings` (the bag reader), `ros_observer` (watching a running
system from outside), `cli` (argument and progress helpers). Each command's module is a thin `main`."""
