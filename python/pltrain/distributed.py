"""DDP support for attached runs (attach.py): rank 0 decides what every command does, and at each step
boundary broadcasts the resulting steering state (α, frozen units, paused, stopped) to every rank, so all
ranks apply a command at the same step. One broadcast_object_list per step (and one per second while
paused, so the other ranks wait in a collective instead of timing out)."""
import torch.distributed as dist


def broadcast(state):
    """Rank 0's `state` on every rank (the others' argument is ignored)."""
    box = [state if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
