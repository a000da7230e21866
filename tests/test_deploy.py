"""Deployed clients (mocosfl.deploy): the same training as the simulation, and every payload
checked before it touches a model."""

import logging
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from mocosfl.deploy.client import DeployedClient
from mocosfl.deploy.local_socket import MAX_FRAME, LocalSocketTransport, recv_frame
from mocosfl.deploy.loopback import LoopbackTransport
from mocosfl.deploy.wire import Message, PayloadRejected, pack, unpack
from mocosfl.train import fit, train

from helpers import TINY, compose

NUM_CLIENTS = 4
DEPLOYED = [
    *(o for o in TINY if not o.startswith(("sfl.", "~callbacks"))),
    f"sfl.num_clients={NUM_CLIENTS}",
    "sfl.clients_per_step=3",
    "sfl.client_batch_size=2",
    "sfl.sync_every=5",
    "sfl.queue_size=40",
    "trainer.max_steps=10",
    "~callbacks.progress",
    "~callbacks.knn",
    "~callbacks.linear_probe",
]  # 10 steps of pools of 3 out of 4 clients, a FedAvg after step 5 and at the end


def deployed_run(tmp_path: Path, overrides: list[str]):
    """A deployment's config and its clients, reached through a loopback transport."""
    cfg = compose("train", tmp_path / "deployed", [*DEPLOYED, *overrides])
    clients = {c: DeployedClient.from_config(cfg, c) for c in range(NUM_CLIENTS)}
    return cfg, clients


def test_a_client_makes_its_views_of_a_step_from_its_own_images_as_the_simulation_does(tmp_path):
    _, clients = deployed_run(tmp_path, [])
    stream = clients[0].stream
    for step in (0, 4, 9):
        batch = stream[step]
        for i, c in enumerate(batch["client_ids"].tolist()):
            query, key = stream.client_views(step, c)
            assert torch.equal(query, batch["query"][i]) and torch.equal(key, batch["key"][i])
    absent = next(c for c in range(NUM_CLIENTS) if c not in stream[0]["client_ids"].tolist())
    with pytest.raises(ValueError, match=f"client {absent} is not in the pool of step 0"):
        stream.client_views(0, absent)


def module_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


@pytest.mark.parametrize(("loss", "precision"), [("two_way", "64-true"), ("legacy_sum", "32-true")])
def test_a_loopback_deployment_trains_what_the_simulation_trains(tmp_path, loss, precision):
    overrides = [f"sfl.loss={loss}", f"trainer.precision={precision}"]
    simulated = compose("train", tmp_path / "simulated", [*DEPLOYED, *overrides])
    fit(simulated)
    cfg, clients = deployed_run(tmp_path, overrides)
    initial = {c: client.bank.states("online", [0]) for c, client in clients.items()}
    transport = LoopbackTransport(clients)
    fit(cfg, clients=transport)

    sim, dep = module_state(tmp_path / "simulated"), module_state(tmp_path / "deployed")
    server_keys = [k for k in sim if not k.startswith("bank.")]
    assert server_keys and all(torch.equal(sim[k], dep[k]) for k in server_keys)
    assert torch.equal(sim["bank.steps"], dep["bank.steps"])
    assert sorted(sim["bank.steps"].tolist()) == [5, 5, 10, 10]  # pools differ: FedAvg matters
    for c, client in clients.items():
        for kind in ("online", "momentum"):
            own = {k: v[0] for k, v in client.bank.states(kind, [0]).items()}
            held = held_state(own, dep, c, kind)
            for name, row in held.items():
                # Exact: the same operations on the same numbers (measured: no difference in
                # float32 either).
                assert torch.equal(row, sim[f"bank.{kind}.{c}.{name}"]), (c, kind, name)
            if kind == "online":
                assert any(not torch.equal(held[k], initial[c][k][0]) for k in held)
    # The traffic on the wire is the cost accounting's, to the byte: the cut layer's, the
    # round's models up, and the average down to every client of the next round (the
    # accounting also counts the last average's, which stays with the server).
    history = np.genfromtxt(tmp_path / "deployed" / "history.csv", delimiter=",", names=True)
    itemsize = torch.finfo(torch.float64 if precision == "64-true" else torch.float32).bits // 8
    rounds = 2
    shares = {"latents_up": 1, "gradients_down": 1, "model_up": 1}
    shares["model_down"] = (rounds - 1) / rounds
    wire = {n for n in history.dtype.names if n.startswith("deploy") and n.endswith("_mb")}
    assert wire == {f"deploy{part}_mb" for part in shares}
    for part, share in shares.items():
        computed = np.nanmax(history[f"cost{part}_mb_per_client_run"]) * NUM_CLIENTS
        on_wire = np.nanmax(history[f"deploy{part}_mb"])  # running totals, all clients
        assert on_wire == pytest.approx(computed * share * itemsize / 4, rel=1e-5), part


def held_state(own: dict, server: dict, c: int, kind: str) -> dict:
    """The models ``kind`` that client ``c`` trains with next: its ``own``, or the server's last
    average (``server``: the server's checkpoint) if it has not received it yet."""
    if server["bank.delivered"][c] == server["bank.version"]:
        return own
    prefix = "bank.model." if kind == "online" else "bank.momentum_model."
    return {k[len(prefix) :]: v for k, v in server.items() if k.startswith(prefix)}


def encoded_client(tmp_path: Path) -> tuple[DeployedClient, int]:
    """A client that has encoded step 0 (one of that step's pool), and the step."""
    _, clients = deployed_run(tmp_path, [])
    pool, _ = clients[0].stream.stream_positions(0)
    client = clients[int(pool[0])]
    reply = client.handle(Message("encode", config={"step": 0, "two_way": 1}))
    assert "error" not in reply.config and reply.arrays["query"].shape[0] == 2
    return client, 0


def grads_like(client: DeployedClient) -> dict[str, np.ndarray]:
    _, latents = client._pending
    return {n: np.ones(latents[n].shape, np.float32) for n in ("query", "query_swapped")}


@pytest.mark.parametrize("fault", ["shape", "nan", "dtype", "unknown", "stale", "lr"])
def test_a_client_refuses_a_bad_gradient_message_and_says_why(tmp_path, caplog, fault):
    client, step = encoded_client(tmp_path)
    grads = grads_like(client)
    config = {"step": step, "lr": 0.1}
    if fault == "shape":
        grads["query"] = grads["query"][:1]
    elif fault == "nan":
        grads["query"][0, 0] = np.nan
    elif fault == "dtype":
        grads["query"] = grads["query"].astype(np.float64)
    elif fault == "unknown":
        grads["key"] = grads["query"]
    elif fault == "stale":
        config["step"] = step - 1
    else:
        config["lr"] = float("nan")
    before = client.bank.states("online", [0])
    with caplog.at_level(logging.WARNING, logger="mocosfl.deploy"):
        reply = client.handle(Message("apply", grads, config))
    assert "error" in reply.config
    assert reply.config["error"] in caplog.text
    after = client.bank.states("online", [0])
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is untouched
    good = client.handle(Message("apply", grads_like(client), {"step": step, "lr": 0.1}))
    assert "error" not in good.config  # the same step's right message still applies


def test_a_client_refuses_to_encode_a_step_it_has_passed(tmp_path, caplog):
    client, step = encoded_client(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mocosfl.deploy"):
        reply = client.handle(Message("encode", config={"step": step, "two_way": 1}))
    assert "after step 0" in reply.config["error"]


class FaultyTransport(LoopbackTransport):
    """Client ``corrupt`` sends NaN latents at step 3; client ``dies`` stops answering after
    step 5 (the server's FedAvg after step 5 still reaches it)."""

    def __init__(self, clients, corrupt: int, dies: int) -> None:
        super().__init__(clients)
        self.corrupt, self.dies = corrupt, dies

    def exchange(self, requests):
        step = next(iter(requests.values())).config.get("step")
        if step is not None and step > 5:
            self.clients.pop(self.dies, None)
        replies = super().exchange(requests)
        reply = replies.get(self.corrupt)
        if step == 3 and reply is not None and reply.kind == "encode":
            reply.arrays["query"][:] = np.nan
        return replies


def test_a_bad_or_missing_client_is_left_out_of_the_step_and_training_goes_on(tmp_path, caplog):
    cfg, clients = deployed_run(tmp_path, ["trainer.log_every_n_steps=1"])
    pool_3, _ = clients[0].stream.stream_positions(3)
    corrupt, dies = int(pool_3[0]), int(pool_3[1])
    with caplog.at_level(logging.WARNING, logger="mocosfl.deploy"):
        metrics = fit(cfg, clients=FaultyTransport(clients, corrupt, dies))
    assert metrics["global_step"] == 10
    assert f"step 3: latents of client {corrupt} rejected" in caplog.text
    assert f"client {dies} did not answer encode" in caplog.text
    history = np.genfromtxt(tmp_path / "deployed" / "history.csv", delimiter=",", names=True)
    dropped = {
        int(s): d for s, d in zip(history["step"], history["trainclients_dropped"]) if d == d
    }
    died = sum(dies in clients[0].stream.stream_positions(t)[0] for t in range(6, 10))
    assert dropped[3] == 1 and dropped[9] == 1 + died > 1


class SyncRecorder(LoopbackTransport):
    """Keeps every ``sync`` request in ``syncs`` (client, message)."""

    def __init__(self, clients) -> None:
        super().__init__(clients)
        self.syncs: list[tuple[int, Message]] = []

    def exchange(self, requests):
        self.syncs += [(c, r) for c, r in requests.items() if r.kind == "sync"]
        return super().exchange(requests)


class RestartingTransport(SyncRecorder):
    """Client ``victim`` is down for step ``down`` and comes back a fresh process (its initial
    weights, no memory of the run) at the next step."""

    def __init__(self, clients, cfg, victim: int, down: int) -> None:
        super().__init__(clients)
        self.cfg, self.victim, self.down = cfg, victim, down

    def exchange(self, requests):
        step = next(iter(requests.values())).config.get("step")
        if step == self.down:
            self.clients.pop(self.victim, None)
        elif step is not None and step > self.down and self.victim not in self.clients:
            self.clients[self.victim] = DeployedClient.from_config(self.cfg, self.victim)
        return super().exchange(requests)


def test_a_client_that_comes_back_starts_from_the_last_average(tmp_path, caplog):
    cfg, clients = deployed_run(tmp_path, [])
    pool, _ = clients[0].stream.stream_positions(5)  # the second round's
    victim, other = int(pool[0]), int(pool[1])
    transport = RestartingTransport(clients, cfg, victim, down=5)
    with caplog.at_level(logging.WARNING, logger="mocosfl.deploy"):
        assert fit(cfg, clients=transport)["global_step"] == 10
    assert f"step 5: client {victim} did not answer sync" in caplog.text
    came_back = [r for c, r in transport.syncs if c == victim and r.config["restart"]]
    alive = [r for c, r in transport.syncs if c == other]
    assert len(came_back) == 1 and len(alive) == 1 and not alive[0].config["restart"]
    assert came_back[0].config["version"] == alive[0].config["version"] == 1
    # The same average as the clients that stayed, momentum copy included (synced here).
    assert came_back[0].arrays.keys() == alive[0].arrays.keys()
    assert any(name.startswith("momentum.") for name in alive[0].arrays)
    for name, array in alive[0].arrays.items():
        assert np.array_equal(came_back[0].arrays[name], array)
    rejoined = transport.clients[victim]
    assert rejoined.last_step == 9  # it trained every later step of its round


def test_a_resumed_deployment_gives_its_clients_the_average_and_trains_as_if_never_stopped(
    tmp_path,
):
    """10 steps in one go equal 5 steps, SIGTERM after the FedAvg that ends them, and a resume
    with freshly built clients, as restarted processes start (from the checkpoint's average)."""
    # Client SGD without momentum: a restarted client has no optimizer state to lose.
    common = ["sfl.client_optimizer.momentum=0", "callbacks.checkpoint.every_n_train_steps=100"]
    cfg, clients = deployed_run(tmp_path, common)
    fit(cfg, clients=LoopbackTransport(clients))
    first = compose("train", tmp_path / "first", [*DEPLOYED, *common])
    with open_dict(first):
        first.callbacks.interrupt = {"_target_": "test_train.InterruptAt", "step": 5, "signum": 15}
    first_clients = {c: DeployedClient.from_config(first, c) for c in range(NUM_CLIENTS)}
    assert fit(first, clients=LoopbackTransport(first_clients))["step"] == 5
    again = [*DEPLOYED, *common, f"resume={tmp_path / 'first'}"]  # as the clients start too
    resumed = compose("train", tmp_path / "resumed", again)
    fresh = {c: DeployedClient.from_config(resumed, c) for c in range(NUM_CLIENTS)}
    transport = SyncRecorder(fresh)
    assert train(resumed, clients=transport)["global_step"] == 10

    assert transport.syncs and {r.config["restart"] for _, r in transport.syncs} == {1}
    whole, dep = module_state(tmp_path / "deployed"), module_state(tmp_path / "resumed")
    kept = [k for k in whole if k != "bank.delivered"]  # who holds the last average differs
    assert kept and all(torch.equal(whole[k], dep[k]) for k in kept)


# -- clients in their own processes ---------------------------------------------------------
PROCESS_CLIENTS = 3
IN_PROCESSES = [
    *(o for o in DEPLOYED if not o.startswith(("sfl.num_clients", "sfl.clients_per_step"))),
    f"sfl.num_clients={PROCESS_CLIENTS}",
    "sfl.clients_per_step=2",
    "trainer.precision=64-true",
]


def start_client_processes(tmp_path: Path, overrides: list[str]) -> dict[int, subprocess.Popen]:
    """``python -m mocosfl.deploy.client`` for every client, once each serves its socket (its
    output goes to ``client<c>.log``)."""
    processes = {}
    for c in range(PROCESS_CLIENTS):
        log = (tmp_path / f"client{c}.log").open("w")
        socket_path = str(tmp_path / f"client{c}.sock")
        command = ["-m", "mocosfl.deploy.client", "--partition-id", str(c), "--socket", socket_path]
        processes[c] = subprocess.Popen(
            [sys.executable, *command, *overrides], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 180
    for c, process in processes.items():
        log = tmp_path / f"client{c}.log"
        while "serving on" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    return processes


@pytest.fixture
def precision() -> str:
    """The trainer precision of :func:`client_processes`: float64 unless a test parametrizes it."""
    return "64-true"


@pytest.fixture
def process_settings(precision) -> list[str]:
    """:data:`IN_PROCESSES` at ``precision``: the settings of the clients and the server."""
    kept = [o for o in IN_PROCESSES if not o.startswith("trainer.precision")]
    return [*kept, f"trainer.precision={precision}"]


@pytest.fixture
def client_processes(tmp_path, process_settings):
    processes = start_client_processes(tmp_path, process_settings)
    yield processes
    for process in processes.values():
        process.kill()
        process.wait()


def socket_transport(tmp_path: Path) -> LocalSocketTransport:
    return LocalSocketTransport({c: tmp_path / f"client{c}.sock" for c in range(PROCESS_CLIENTS)})


@pytest.mark.slow  # fresh Python processes
@pytest.mark.parametrize("precision", ["64-true", "32-true"])
def test_clients_in_their_own_processes_train_what_the_simulation_trains(
    tmp_path, client_processes, process_settings
):
    # Exact in float32 as well: both sides run the same operations on the same numbers, and the
    # wire carries them unchanged.
    fit(compose("train", tmp_path / "simulated", process_settings))
    transport = socket_transport(tmp_path)
    fit(compose("train", tmp_path / "deployed", process_settings), clients=transport)

    sim, dep = module_state(tmp_path / "simulated"), module_state(tmp_path / "deployed")
    assert all(torch.equal(sim[k], dep[k]) for k in sim if not k.startswith("bank."))
    for kind in ("online", "momentum"):
        replies = transport.exchange(
            dict.fromkeys(range(PROCESS_CLIENTS), Message("get_state", config={"model": kind}))
        )
        for c, reply in replies.items():
            own = {name: torch.from_numpy(array) for name, array in reply.arrays.items()}
            for name, row in held_state(own, dep, c, kind).items():
                assert torch.equal(row, sim[f"bank.{kind}.{c}.{name}"]), (c, kind, name)
    transport.close()


class KillingTransport(LocalSocketTransport):
    """Kills client ``victim``'s process before the encode of step ``at``."""

    def __init__(self, paths, process: subprocess.Popen, at: int) -> None:
        super().__init__(paths)
        self.process, self.at = process, at

    def exchange(self, requests):
        if next(iter(requests.values())).config.get("step") == self.at:
            self.process.kill()
            self.process.wait()
        return super().exchange(requests)


@pytest.mark.slow  # fresh Python processes
def test_a_killed_client_process_is_dropped_and_the_run_finishes(
    tmp_path, client_processes, caplog
):
    victim = 1
    paths = {c: tmp_path / f"client{c}.sock" for c in range(PROCESS_CLIENTS)}
    transport = KillingTransport(paths, client_processes[victim], at=3)
    cfg = compose("train", tmp_path / "deployed", [*IN_PROCESSES, "trainer.log_every_n_steps=1"])
    with caplog.at_level(logging.WARNING, logger="mocosfl.deploy"):
        metrics = fit(cfg, clients=transport)
    assert metrics["global_step"] == 10
    assert f"client {victim}: connection lost" in caplog.text
    history = np.genfromtxt(tmp_path / "deployed" / "history.csv", delimiter=",", names=True)
    dropped = {
        int(s): d for s, d in zip(history["step"], history["trainclients_dropped"]) if d == d
    }
    stream = DeployedClient.from_config(cfg, 0).stream
    missed = sum(victim in stream.stream_positions(t)[0] for t in range(3, 10))
    assert missed > 0 and dropped[9] == missed
    transport.close()


def test_a_packed_message_comes_back_as_it_was_and_nothing_else_unpacks():
    message = Message(
        "apply", {"query": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"step": 3, "lr": 0.05}
    )
    back = unpack(pack(message))
    assert (back.kind, back.config) == ("apply", {"step": 3, "lr": 0.05})
    assert np.array_equal(back.arrays["query"], message.arrays["query"])
    objects = Message("apply", {"query": np.array([{"code": "runs"}], dtype=object)})
    with pytest.raises(ValueError):  # np.save needs pickle for objects; unpack never allows it
        unpack(pack(objects))
    for garbage in (b"", b"not an archive", pack(message)[:-10]):
        with pytest.raises(PayloadRejected, match="not a packed message"):
            unpack(garbage)


def test_a_frame_longer_than_the_limit_is_refused_before_it_is_read():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(struct.pack(">Q", MAX_FRAME + 1))
        with pytest.raises(PayloadRejected, match="more than"):
            recv_frame(right)
