"""Everything periodic: FedAvg rounds and online evaluation; and the run's cost accounting."""

from mocosfl.callbacks.attack import AttackCallback
from mocosfl.callbacks.checkpoint import RunCheckpoint, RunInterrupted
from mocosfl.callbacks.costs import CostCallback
from mocosfl.callbacks.fedavg import FedAvgCallback
from mocosfl.callbacks.knn import KNNMonitor
from mocosfl.callbacks.linear_probe import LinearProbeCallback

__all__ = [
    "AttackCallback",
    "CostCallback",
    "FedAvgCallback",
    "KNNMonitor",
    "LinearProbeCallback",
    "RunCheckpoint",
    "RunInterrupted",
]
