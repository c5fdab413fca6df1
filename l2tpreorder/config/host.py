"""What `run` needs of this host beyond a valid file, and where it keeps its state there."""

from __future__ import annotations

import os
import pwd

from l2tpreorder.config.errors import ConfigError
from l2tpreorder.config.model import Config

# sysexits.h EX_CONFIG: the units' RestartPreventExitStatus=78 makes a bad configuration end in
# `failed` at once instead of a restart loop that can never succeed.
EX_CONFIG = 78


def state_file_path(config: Config, queue: int | None = None) -> str | None:
    """Where `run` saves and restores its state: `state_file`, else $STATE_DIRECTORY/state.json
    under systemd's StateDirectory=, else nowhere. `queue`: an in-path worker of several, each
    with its own file (`.queueN` appended). One helper for both modes: they must agree."""
    path = config.state_file
    if path is None:
        directory = os.environ.get("STATE_DIRECTORY")
        if not directory:
            return None
        path = os.path.join(directory.split(":")[0], "state.json")
    return path if queue is None else f"{path}.queue{queue}"


def check_host(config: Config) -> None:
    """What `run` needs of this host beyond a valid file: the `user` exists, and the directory
    of `state_file` exists and is writable (the file is written there on every stop).
    Raises ConfigError; `check-config` runs it so it refuses what `run` would."""
    uid, gids = os.geteuid(), set(os.getgroups()) | {os.getegid()}
    if config.user is not None:
        try:
            pw = pwd.getpwnam(config.user)
        except KeyError:
            expected = "an existing user or null"
            raise ConfigError("user", config.user, expected, config.source) from None
        uid, gids = pw.pw_uid, {pw.pw_gid, *os.getgrouplist(pw.pw_name, pw.pw_gid)}
    if config.state_file is not None:
        directory = os.path.dirname(os.path.abspath(config.state_file))
        if not os.path.isdir(directory):
            expected = f"a path in an existing directory ({directory} does not exist)"
            raise ConfigError("state_file", config.state_file, expected, config.source)
        if not _writable_by(directory, uid, gids):
            who = f"user {config.user}" if config.user is not None else "this user"
            expected = f"a path in a directory {who} can write ({directory} is not)"
            raise ConfigError("state_file", config.state_file, expected, config.source)


def _writable_by(directory: str, uid: int, gids: set[int]) -> bool:
    """Whether `uid` may create files in `directory` (the daemon writes its state file after
    dropping to `user`, so the check is for that user, not for whoever runs check-config)."""
    if uid == 0:
        return True
    st = os.stat(directory)
    need = 0o3  # write + search
    if st.st_uid == uid:
        return (st.st_mode >> 6) & need == need
    if st.st_gid in gids:
        return (st.st_mode >> 3) & need == need
    return st.st_mode & need == need
