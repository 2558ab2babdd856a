"""Is the process that claims to run a task still there?

A Running status names its owner (pid and host).  After a kernel restart or a SIGKILL the
owner is gone and nobody will ever write the final status, so readers need a cheap,
side-effect-free liveness check to mark such tasks as interrupted.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def this_host() -> str:
    """Host name recorded as a status owner; pids are only comparable on the same host."""
    import socket  # only needed once a status is written or checked

    return socket.gethostname()


def is_pid_alive(pid: object) -> bool:
    """True when a process with this pid exists on this host and is not a zombie."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    # A killed child that nobody reaped yet still answers kill(0); /proc tells the truth on Linux.
    stat = Path(f"/proc/{pid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return bool(fields) and fields[0] not in ("Z", "X")
