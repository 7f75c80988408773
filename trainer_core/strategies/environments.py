"""Who started this process and where its peers are (Lightning's cluster environments).

- ``LightningEnvironment``: the script itself starts the other ranks (``strategy="ddp"``'s launcher sets
  ``LOCAL_RANK``, ``NODE_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` for its children).
- ``TorchElasticEnvironment``: ``torchrun`` (or the Runyard worker, which sets the same variables)
  started every rank; the Trainer joins.
- ``SLURMEnvironment``: ``srun`` started every rank (``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODEID``,
  ``SLURM_NTASKS``; the first host of ``SLURM_NODELIST`` is the main address).
"""

from __future__ import annotations

import os
import re
import socket


def find_free_network_port() -> int:
    """A port the OS reports free on loopback (Lightning's ``find_free_network_port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClusterEnvironment:
    """The base: ranks, world size and the rendezvous address."""

    def __init__(self) -> None:
        self._global_rank = 0
        self._world_size = 1

    @property
    def creates_processes_externally(self) -> bool:
        """True when something else (torchrun, srun, the parent script) started this rank."""
        return False

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", "0"))

    @staticmethod
    def detect() -> bool:
        return True

    def world_size(self) -> int:
        return self._world_size

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        return self._global_rank

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank

    def local_rank(self) -> int:
        return 0

    def node_rank(self) -> int:
        return 0

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Raise when ``devices`` x ``num_nodes`` cannot be what started these processes."""

    def teardown(self) -> None:
        pass


class LightningEnvironment(ClusterEnvironment):
    """The default: this script is rank 0 and its launcher starts the others (Lightning's)."""

    def __init__(self) -> None:
        super().__init__()
        self._main_port = -1

    @property
    def creates_processes_externally(self) -> bool:
        return "LOCAL_RANK" in os.environ

    @property
    def main_port(self) -> int:
        if self._main_port == -1:
            port = os.environ.get("MASTER_PORT")
            self._main_port = int(port) if port else find_free_network_port()
        return self._main_port

    def world_size(self) -> int:
        return self._world_size

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))

    def set_global_rank(self, rank: int) -> None:
        from trainer_core.utilities.rank_zero import rank_zero_only

        self._global_rank = rank
        rank_zero_only.rank = rank

    def teardown(self) -> None:
        if "WORLD_SIZE" in os.environ:
            del os.environ["WORLD_SIZE"]


class TorchElasticEnvironment(ClusterEnvironment):
    """Ranks started by ``torchrun`` (``TORCHELASTIC_RUN_ID`` set); everything comes from its variables."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ["MASTER_PORT"])

    @staticmethod
    def detect() -> bool:
        return "TORCHELASTIC_RUN_ID" in os.environ and all(
            v in os.environ for v in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")
        )

    def world_size(self) -> int:
        return int(os.environ["WORLD_SIZE"])

    def set_world_size(self, size: int) -> None:
        pass  # torchrun decided it

    def global_rank(self) -> int:
        return int(os.environ["RANK"])

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return int(os.environ["LOCAL_RANK"])

    def node_rank(self) -> int:
        return int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", 0)))

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        local = os.environ.get("LOCAL_WORLD_SIZE")
        if local is not None and int(local) != num_devices:
            raise ValueError(
                f"You set `devices={num_devices}` in the Trainer, but torchrun started {local} processes on this "
                f"node (LOCAL_WORLD_SIZE={local}). Pass `devices={local}` or `--nproc-per-node={num_devices}`."
            )
        if num_devices * num_nodes != self.world_size():
            raise ValueError(
                f"You set `devices={num_devices}` and `num_nodes={num_nodes}` in the Trainer, but the product "
                f"({num_devices} * {num_nodes}) does not match the world size ({self.world_size()})."
            )


class SLURMEnvironment(ClusterEnvironment):
    """Ranks started by ``srun`` (Lightning's ``SLURMEnvironment``, without requeueing)."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @staticmethod
    def detect() -> bool:
        return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")

    @property
    def main_address(self) -> str:
        nodelist = os.environ.get("SLURM_NODELIST", "127.0.0.1")
        address = _first_slurm_host(nodelist)
        os.environ["MASTER_ADDR"] = address
        return address

    @property
    def main_port(self) -> int:
        if "MASTER_PORT" in os.environ:
            return int(os.environ["MASTER_PORT"])
        job_id = os.environ.get("SLURM_JOB_ID", "0")
        port = 10000 + int(job_id[-4:] if job_id.isdigit() else 0)  # Lightning's port from the job id
        os.environ["MASTER_PORT"] = str(port)
        return port

    def world_size(self) -> int:
        return int(os.environ["SLURM_NTASKS"])

    def set_world_size(self, size: int) -> None:
        pass

    def global_rank(self) -> int:
        return int(os.environ["SLURM_PROCID"])

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return int(os.environ["SLURM_LOCALID"])

    def node_rank(self) -> int:
        return int(os.environ.get("SLURM_NODEID", 0))

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        ntasks = os.environ.get("SLURM_NTASKS_PER_NODE")
        if ntasks is not None and ntasks.isdigit() and int(ntasks) != num_devices:
            raise ValueError(
                f"You set `devices={num_devices}` in the Trainer, but `--ntasks-per-node={ntasks}` in your SLURM "
                "script. These must match."
            )
        nnodes = os.environ.get("SLURM_NNODES")
        if nnodes is not None and int(nnodes) != num_nodes:
            raise ValueError(
                f"You set `num_nodes={num_nodes}` in the Trainer, but `--nodes={nnodes}` in your SLURM script. "
                "These must match."
            )


def _first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[001-004,7],other`` -> ``node001``)."""
    nodelist = nodelist.strip()
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if not match:
        return nodelist
    prefix, ranges = match.group(1), match.group(3)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def detect_environment() -> ClusterEnvironment:
    """torchrun's variables first, then SLURM's, else the script launches its own ranks."""
    if TorchElasticEnvironment.detect():
        return TorchElasticEnvironment()
    if SLURMEnvironment.detect():
        return SLURMEnvironment()
    return LightningEnvironment()
