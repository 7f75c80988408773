"""Imported only in the worker's forkserver (it is the first module of its preload list).

The forkserver and the run processes it forks leave the worker's process group, so a signal
sent to the worker's group (a terminal's Ctrl-C, ``kill -TERM -<pgid>``) reaches the Celery
worker alone, which then stops its run in order: SIGUSR1, a resume checkpoint, a requeue.
When the worker dies, the forkserver sees its pipe close and exits, and each run process,
which has PR_SET_PDEATHSIG, is killed with it.
"""

from __future__ import annotations

import os

os.setpgrp()
