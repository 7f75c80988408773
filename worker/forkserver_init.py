"""Imported only in the worker's forkserver (it is the first module of its preload list).

The forkserver and the run processes it forks leave the worker's process group, so a signal
sent to the worker's group (a terminal's Ctrl-C, ``kill -TERM -<pgid>``) reaches the Celery
worker alone, which then stops its run in order: SIGUSR1, a resume checkpoint, a requeue.
When the worker dies, each run process, which watches the worker's pidfd, kills itself (see
``worker.run_process``), and the forkserver exits once its last child is gone.
"""

from __future__ import annotations

import os

os.setpgrp()
