"""MocoSFL on Flower's Deployment Engine, TLS and SuperNode authentication on, as the README's
``make deploy-loopback`` runs it: a SuperLink, SuperNodes with their client processes, and the
run submitted with ``flwr run``."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_deploy import IN_PROCESSES, PROCESS_CLIENTS, module_state

from mocosfl.deploy.client import DeployedClient
from mocosfl.deploy.credentials import write_credentials
from mocosfl.train import fit

from helpers import ROOT, compose

BIN = Path(sys.executable).parent


@pytest.mark.slow  # fresh processes: a SuperLink, SuperNodes, clients and Flower's apps
@pytest.mark.long(seconds=270)
def test_a_flower_deployment_trains_what_the_simulation_trains(tmp_path):
    env = {**os.environ, "DEPLOY_DIR": str(tmp_path / "deploy"), "PY": sys.executable}
    script = [str(ROOT / "deploy" / "loopback.sh"), str(PROCESS_CLIENTS), *IN_PROCESSES]
    done = subprocess.run(
        ["bash", *script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deploy: done" in done.stdout

    fit(compose("train", tmp_path / "simulated", IN_PROCESSES))
    sim, dep = module_state(tmp_path / "simulated"), module_state(tmp_path / "deploy" / "run")
    assert all(torch.equal(sim[k], dep[k]) for k in sim if not k.startswith("bank."))
    final = [
        torch.load(d / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=True)
        for d in (tmp_path / "simulated", tmp_path / "deploy" / "run")
    ]
    # After the last FedAvg every client holds the average: the clients' side, compared.
    assert all(
        torch.equal(final[0]["client"][k], final[1]["client"][k]) for k in final[0]["client"]
    )


@pytest.mark.slow  # fresh processes: a SuperLink, SuperNodes, clients and Flower's apps
@pytest.mark.long(seconds=140)
def test_a_client_process_killed_under_flower_is_dropped_and_the_run_finishes(tmp_path):
    deploy = tmp_path / "deploy"
    env = {**os.environ, "DEPLOY_DIR": str(deploy), "PY": sys.executable}
    settings = [o for o in IN_PROCESSES if not o.startswith("trainer.max_steps")]
    settings += ["trainer.max_steps=4", "trainer.log_every_n_steps=1"]
    script = [str(ROOT / "deploy" / "loopback.sh"), str(PROCESS_CLIENTS), *settings]
    run = subprocess.Popen(
        ["bash", *script], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    history = deploy / "run" / "history.csv"
    deadline = time.monotonic() + 600
    while not (history.is_file() and len(history.read_text().splitlines()) > 1):
        assert run.poll() is None and time.monotonic() < deadline, run.stdout.read().decode()
        time.sleep(0.5)
    stream = DeployedClient.from_config(compose("train", tmp_path / "plan", settings), 0).stream
    victim = int(stream.stream_positions(1)[0][0])  # in the pool of every later step
    # After the first step: its process goes, its SuperNode stays.
    process = f"deploy.client --partition-id {victim} --socket {deploy / f'client{victim}.sock'}"
    subprocess.run(["pkill", "-f", process], check=True)
    out = run.communicate(timeout=600)[0].decode()
    assert run.returncode == 0 and "deploy: done" in out, out
    log = (deploy / "flwr-run.log").read_text()
    assert f"client {victim}: " in log and "Traceback" not in out
    rows = np.genfromtxt(history, delimiter=",", names=True)
    assert np.nanmax(rows["trainclients_dropped"]) >= 1


def start(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # fresh processes
def test_a_supernode_whose_key_is_not_registered_is_refused(tmp_path):
    write_credentials(tmp_path, nodes=1)
    port = free_port()
    superlink = start(
        [
            str(BIN / "flower-superlink"),
            "--ssl-ca-certfile",
            str(tmp_path / "ca.crt"),
            "--ssl-certfile",
            str(tmp_path / "server.pem"),
            "--ssl-keyfile",
            str(tmp_path / "server.key"),
            "--enable-supernode-auth",
            "--port",
            str(port),
        ],
        tmp_path / "superlink.log",
    )
    try:
        deadline = time.monotonic() + 60
        while "Uvicorn running" not in (tmp_path / "superlink.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "superlink.log").read_text()
            time.sleep(0.2)
        stranger = start(
            [
                str(BIN / "flower-supernode"),
                "--superlink",
                f"127.0.0.1:{port}",
                "--root-certificates",
                str(tmp_path / "ca.crt"),
                "--auth-supernode-private-key",
                str(tmp_path / "node0"),
                "--port",
                str(free_port()),
            ],
            tmp_path / "supernode.log",
        )
        assert stranger.wait(timeout=120) != 0  # refused: it never joins
        assert "Exit Code: 305" in (tmp_path / "supernode.log").read_text()  # connection error
    finally:
        superlink.kill()
        superlink.wait()


def test_a_superlink_without_certificates_refuses_to_start_unless_told_insecure(tmp_path):
    done = subprocess.run(
        [str(BIN / "flower-superlink"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Certificates are required unless running in insecure mode" in done.stdout + done.stderr
