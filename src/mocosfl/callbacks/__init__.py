"""Everything periodic: FedAvg rounds and online evaluation."""

from mocosfl.callbacks.fedavg import FedAvgCallback
from mocosfl.callbacks.knn import KNNMonitor

__all__ = ["FedAvgCallback", "KNNMonitor"]
