"""mobile_vla_ros: asynchronous vision-language-action policy nodes for a mobile robot."""

__version__ = "0.1.0"
