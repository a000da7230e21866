"""Cost accounting: what a client model costs (profile), what it sends and receives (traffic)
and a run's totals (report)."""

from mocosfl.costs.profile import ClientCosts, count_flops, measure_client, saved_bytes
from mocosfl.costs.report import MFLOPS, RunCosts, run_costs
from mocosfl.costs.traffic import MB, TRAFFIC_PARTS, Traffic, client_traffic, cut_traffic_per_image

__all__ = [
    "MB",
    "MFLOPS",
    "TRAFFIC_PARTS",
    "ClientCosts",
    "RunCosts",
    "Traffic",
    "client_traffic",
    "count_flops",
    "cut_traffic_per_image",
    "measure_client",
    "run_costs",
    "saved_bytes",
]
