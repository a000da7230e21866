"""Cost accounting: what a client model costs (profile), what it sends and receives (traffic),
a run's totals (report), and the same for FL-SSL clients, which train the whole network (flssl)."""

from mocosfl.costs.flssl import CostModels, FLSSLModule, FLSSLRunCosts, flssl_run_costs
from mocosfl.costs.profile import (
    ClientCosts,
    count_flops,
    fedavg_numel,
    measure_client,
    saved_bytes,
)
from mocosfl.costs.report import MFLOPS, RunCosts, run_costs
from mocosfl.costs.traffic import MB, TRAFFIC_PARTS, Traffic, client_traffic, cut_traffic_per_image

__all__ = [
    "MB",
    "MFLOPS",
    "TRAFFIC_PARTS",
    "ClientCosts",
    "CostModels",
    "FLSSLModule",
    "FLSSLRunCosts",
    "RunCosts",
    "Traffic",
    "client_traffic",
    "count_flops",
    "cut_traffic_per_image",
    "fedavg_numel",
    "flssl_run_costs",
    "measure_client",
    "run_costs",
    "saved_bytes",
]
