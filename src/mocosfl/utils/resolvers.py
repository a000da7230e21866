"""OmegaConf resolvers used by the configs (registered on import of :mod:`mocosfl`)."""

from omegaconf import OmegaConf

PAPER_SERVER_BATCH = 100


def auto_client_batch(num_clients: int) -> int:
    """The paper's --auto_adjust per-client batch: 100 // N up to 50 clients, else 1."""
    return PAPER_SERVER_BATCH // num_clients if num_clients <= 50 else 1


def auto_clients_per_step(num_clients: int) -> int:
    """The paper's --auto_adjust pool: every client below 200, else a ratio 1 / (N // 100)."""
    if num_clients < 200:
        return num_clients
    return num_clients // (num_clients // PAPER_SERVER_BATCH)


def register() -> None:
    for name, fn in {
        "mocosfl.auto_client_batch": auto_client_batch,
        "mocosfl.auto_clients_per_step": auto_clients_per_step,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
