"""l2tpreorder: put L2TPv2 data messages back in Ns order before the LNS sees them."""

from l2tpreorder.build import BUILD

__version__ = "0.1.0"
__all__ = ["BUILD", "__version__"]
