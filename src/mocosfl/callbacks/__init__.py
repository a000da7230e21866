"""Everything periodic: FedAvg rounds and online evaluation."""

from mocosfl.callbacks.attack import AttackCallback
from mocosfl.callbacks.fedavg import FedAvgCallback
from mocosfl.callbacks.knn import KNNMonitor
from mocosfl.callbacks.linear_probe import LinearProbeCallback

__all__ = ["AttackCallback", "FedAvgCallback", "KNNMonitor", "LinearProbeCallback"]
