"""In-path mode. The adapter and netlink parser may run compiled (l2tpreorder.build)."""

from l2tpreorder.build import extend_path

extend_path(__path__, __name__)
