"""Command-line tools built on the core: bring-up, export, synthetic inputs."""
