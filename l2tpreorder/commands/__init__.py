"""The command-line clients of the running daemon (`status`, `reload`); `cli.py` dispatches."""
