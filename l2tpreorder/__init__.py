"""l2tpreorder: put L2TPv2 data messages back in Ns order before the LNS sees them."""

__version__ = "0.1.0"
