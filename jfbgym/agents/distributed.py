"""Data-parallel training over processes and nodes: ``torchrun ... -m jfbgym train``.

JFB training is data parallel over initial states with one shared value network, so K ranks run
the single-process algorithm on a K-way split of the same global minibatch: every rank draws the
global batch from the shared seeded generator and keeps its contiguous slice, scales its loss by
its share, and the gradients are summed over ranks (an explicit all-reduce of the network's
gradients: the implicit layer sits outside the network, so DDP's module wrapper buys nothing).
Every decision (a non-finite step, a validation blow-up, the budget) is reduced, so the ranks
never disagree; only rank 0 writes files. Without torchrun (no ``WORLD_SIZE`` > 1 in the
environment) this is a single process and nothing is initialised.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable

import torch

TIMEOUT = datetime.timedelta(minutes=5)  # a rank that died stalls the others this long at most


def environment_integer(name: str, default: int) -> int:
    """An integer environment variable that torchrun sets, checked (``ValueError`` naming it)."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name}: expected an integer >= 0 in the environment (torchrun sets "
                         f"it), got {text!r}")
    return value


class PeerLost(RuntimeError):
    """A collective failed: another rank died or the connection to it broke."""


class World:
    """This process's rank among ``size``; single-process when ``size`` is 1."""

    def __init__(self, rank: int = 0, size: int = 1, owned: bool = False) -> None:
        self.rank, self.size = rank, size
        self.owned = owned  # whether this World initialised the process group (and ends it)

    @classmethod
    def from_environment(cls, device: str | torch.device = "cpu") -> World:
        """Join the process group torchrun describes (``gloo`` on CPU, ``nccl`` on CUDA), or a
        single-process world without torchrun."""
        import torch.distributed as dist

        size = environment_integer("WORLD_SIZE", 1)
        if size <= 1:
            return cls()
        owned = not dist.is_initialized()
        if owned:
            cuda = torch.device(device).type == "cuda"
            if cuda:
                torch.cuda.set_device(environment_integer("LOCAL_RANK", 0))
            dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
        return cls(dist.get_rank(), dist.get_world_size(), owned)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of ``n`` items (sizes differ by at most one)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def _reduce(self, value: torch.Tensor, op: str = "sum") -> torch.Tensor:
        import torch.distributed as dist

        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
        try:
            dist.all_reduce(value, op=ops[op])
        except (RuntimeError, OSError) as err:  # gloo/nccl report a dead peer as these
            raise PeerLost(f"rank {self.rank}: a collective with the other ranks failed "
                           f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
                           ) from err
        return value

    def sum(self, value: float) -> float:
        """``value`` summed over ranks (float64)."""
        if not self.distributed:
            return value
        return float(self._reduce(torch.tensor([value], dtype=torch.float64)))

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on some rank."""
        if not self.distributed:
            return flag
        return bool(self._reduce(torch.tensor([float(flag)]), "max") > 0)

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Sum every gradient over ranks, flattened into one all-reduce."""
        if not self.distributed:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def close(self) -> None:
        import torch.distributed as dist

        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
