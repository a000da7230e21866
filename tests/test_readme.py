"""The README is executable: every command of its shell blocks runs as written.

Each ```bash block runs as one bash script, in README order, in a fresh copy of the project (its
files linked, ``.venv`` shared, ``../shared`` beside it, no ``logs/``), offline, as a user
without a W&B login would run it (``WANDB_MODE=disabled`` to save W&B's start-up; the offline
logger has its own test). Tiny CIFAR-10/100 files in the original pickle format stand in for
the downloads under ``data/``. The only change to a command is the tiny-size overrides of
:data:`TINY`, appended (Hydra: the last value of a key wins). :data:`NOT_RUN` lists the
commands that are not run, with the reason; :data:`MUST_FAIL` those that need a W&B login and
are checked to stop with their one-line error.

With ``MOCOSFL_README_LOG=<file>`` the test writes each command and the last lines it printed.

The table of the paper's rows between the ``paper-table`` markers is the one that
``python -m mocosfl.table --paper-markdown`` generates from ``conf/paper/numbers.yaml``, and the
CPU study's between the ``study-table`` markers the one ``benchmarks/study.py --markdown`` prints
from ``benchmarks/results/study.json``.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mocosfl import table

from data_helpers import write_tiny_cifar10, write_tiny_cifar100

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAPER_TABLE = re.compile(r"<!-- paper-table:begin -->\n(.*?)\n<!-- paper-table:end -->", re.DOTALL)
STUDY_TABLE = re.compile(r"<!-- study-table:begin -->\n(.*?)\n<!-- study-table:end -->", re.DOTALL)

_TRAIN = [
    "model.width=8",
    "module.head_hidden_dim=32",
    "module.head_out_dim=16",
    "sfl.queue_size=64",
    "data.val_images=100",
    "data.num_workers=0",
    "trainer.max_steps=3",
    "data.max_train_images=1500",  # the real CIFAR-10 JPEGs: evaluation extracts 1,500, not 50,000
    "callbacks.knn.k=5",
    "num_threads=1",
]
# (what a command contains, the overrides appended to it); every matching entry applies.
TINY: list[tuple[str, list[str]]] = [
    ("mocosfl.train", _TRAIN),
    ("mocosfl-train", _TRAIN),
    ("make train", _TRAIN),
    ("make sweep-local", _TRAIN),
    ("make demo", _TRAIN),
    ("experiment=taressfl_stage1", ["module.simulator_width=8", "module.simulator_blocks=1"]),
    ("callbacks=attack", ["callbacks.attack.decoder.epochs=1", "callbacks.attack.num_targets=8"]),
    ("hparams_search=knn_optuna", ["hydra.sweeper.n_trials=2"]),
    ("mocosfl.eval", ["eval.probe.epochs=2"]),
    ("make eval", ["eval.probe.epochs=2"]),
    ("mocosfl.attack", ["attack.decoder.epochs=1", "attack.num_targets=8"]),
    ("make attack", ["attack.decoder.epochs=1", "attack.num_targets=8"]),
    ("papermill notebooks/linear_eval", ["-p epochs 2"]),
    ("papermill notebooks/attack", ["-p attack_epochs 1 -p num_targets 8"]),
    (
        "make bench",
        [
            "--clients 10 --engines loop --width 8 --server-batch 10 --queue-size 40",
            "--steps 1 --warmup 0 --json bench.json",
        ],
    ),
]
NOT_RUN = {
    "bash benchmarks/gpu_check.sh --tiny": "tests/test_gpu_check.py runs it",
    "bash benchmarks/gpu_check.sh": "needs a GPU",
    "make deploy-loopback": "tests/test_deploy_flower.py runs deploy/loopback.sh (3 minutes)",
    "make study": "tests/test_study.py runs it on generated images; the real tier takes an hour",
    "make test": "the suite itself",
    "make test-fast": "the suite itself",
}
MUST_FAIL = {
    "make sweep SWEEP=": "W&B sweeps need a W&B account",
    "make agent SWEEP_ID=": "W&B sweeps need a W&B account",
}
MAKE_ARGS = re.compile(r'ARGS="([^"]*)"')


def shell_blocks(text: str) -> list[list[str]]:
    """The README's ```bash blocks, each a list of commands (continuations joined)."""
    blocks = re.findall(r"^\s*```bash\n(.*?)^\s*```", text, flags=re.DOTALL | re.MULTILINE)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", "", block)
        commands.append([line.strip() for line in joined.splitlines() if line.strip()])
    return commands


def split_comment(line: str) -> tuple[str, str]:
    match = re.search(r"\s+#\s.*$", line)
    return (line[: match.start()], line[match.start() :]) if match else (line, "")


def tiny(line: str) -> str:
    """``line`` with its tiny-size overrides appended (inside ``ARGS="..."`` for make)."""
    command, comment = split_comment(line)
    extra = [o for needle, overrides in TINY if needle in command for o in overrides]
    if not extra:
        return line
    text = " ".join(extra)
    if command.startswith("make bench"):
        return f'{command} ARGS="{text}"{comment}'
    if command.startswith("make "):
        if MAKE_ARGS.search(command):
            return MAKE_ARGS.sub(lambda m: f'ARGS="{m.group(1)} {text}"', command) + comment
        return f'{command} ARGS="{text}"{comment}'
    return f"{command} {text}{comment}"


def workspace(tmp_path: Path) -> Path:
    """A fresh copy of the project (files linked) with ``../shared`` beside it."""
    project = tmp_path / "main"
    project.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {"logs", "data", "outputs", ".git", ".pytest_cache"}:
            (project / entry.name).symlink_to(entry)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared)
    write_tiny_cifar10(project / "data" / "cifar10", per_batch=250, test_size=64)
    write_tiny_cifar100(project / "data" / "cifar100", train_size=600, test_size=64)
    return project


def run_script(
    script: str, cwd: Path, env: dict[str, str], timeout: float = 900
) -> tuple[int, str]:
    """Exit code and output (one stream, in the order printed) of a bash script. A command that
    runs past ``timeout`` is a failure, and its whole process group is killed, so that a
    training process it started cannot go on beside the rest of the suite."""
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return 124, f"{output}\n(timed out after {timeout:.0f} s; its process group was killed)"
    return proc.returncode, output


def run_block(
    lines: list[str], cwd: Path, env: dict[str, str]
) -> list[tuple[str, int, str, float]]:
    """Run one block line by line, each line's shell variables and ``source`` carried to the
    next; returns (command as run, exit code, what it printed, seconds) for every line."""
    results = []
    state = cwd / ".readme_env"
    for line in lines:
        skip = next((why for cmd, why in NOT_RUN.items() if line.startswith(cmd)), None)
        if skip:
            results.append((line, 0, f"(not run: {skip})", 0.0))
            continue
        command = tiny(line)
        script = (
            f"[ -f {state} ] && source {state}\n{command}\nstatus=$?\n"
            f"declare -p RUN MULTIRUN STAGE1 PATH VIRTUAL_ENV 2>/dev/null > {state}\nexit $status\n"
        )
        started = time.monotonic()
        code, output = run_script(script, cwd, env)
        seconds = time.monotonic() - started
        results.append((command, code, output, seconds))
    return results


def last_lines(output: str, n: int = 3) -> str:
    return "\n".join(output.strip().splitlines()[-n:])


@pytest.mark.slow
@pytest.mark.long(seconds=530)
def test_every_readme_command_runs_as_written(tmp_path):
    blocks = shell_blocks(README.read_text())
    assert len(blocks) > 10, "the README lost its shell blocks"
    project = workspace(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), NETRC=str(home / "netrc"), WANDB_MODE="disabled")
    transcript, failures = [], []
    for lines in blocks:
        for command, code, output, seconds in run_block(lines, project, env):
            transcript.append(
                f"$ {command}\n[exit {code}, {seconds:.0f} s]\n{last_lines(output)}\n"
            )
            expected = next((msg for cmd, msg in MUST_FAIL.items() if cmd in command), None)
            if expected:
                errors = [line for line in output.splitlines() if line.startswith("error: ")]
                if code != 2 or len(errors) != 1 or expected not in errors[0]:
                    failures.append(f"{command}: expected one 'error: {expected}' line\n{output}")
            elif code != 0 or "Traceback" in output:
                failures.append(f"{command}: exit {code}\n{output[-3000:]}")
            elif "features have collapsed" in output:
                failures.append(f"{command}: a false collapse alarm\n{output[-3000:]}")
    if os.environ.get("MOCOSFL_README_LOG"):
        Path(os.environ["MOCOSFL_README_LOG"]).write_text("\n".join(transcript))
    assert not failures, "\n\n".join(failures)
    # The multirun ran without a hydra.sweep.dir override, into logs/ of the copy.
    assert list((project / "logs" / "train" / "multiruns").glob("*/0/metrics.json"))


def test_tiny_overrides_go_where_each_command_reads_them():
    assert tiny('make train DATASET=cifar100 ARGS="sfl.cut_layer=2"  # note') == (
        f'make train DATASET=cifar100 ARGS="sfl.cut_layer=2 {" ".join(_TRAIN)}"  # note'
    )
    assert tiny("make demo   # a minute") == f'make demo ARGS="{" ".join(_TRAIN)}"   # a minute'
    assert tiny("RUN=$(ls -td logs/train/runs/*/ | head -1)") == (
        "RUN=$(ls -td logs/train/runs/*/ | head -1)"
    )
    assert tiny("python -m mocosfl.eval ckpt_path=x eval=semi10").endswith("eval.probe.epochs=2")


def test_readme_paper_table_is_generated_from_the_paper_numbers(capsys):
    (found,) = PAPER_TABLE.findall(README.read_text())
    assert table.main(["--paper-markdown"]) == 0
    assert found == capsys.readouterr().out.rstrip("\n"), (
        "README.md's table of paper rows differs from conf/paper/numbers.yaml: replace the lines "
        "between its paper-table markers with the output of "
        "`python -m mocosfl.table --paper-markdown`"
    )


def test_the_study_table_is_the_committed_study_json():
    """The CPU study's table between the ``study-table`` markers is ``benchmarks/study.py
    --markdown`` of the committed ``benchmarks/results/study.json``: no number is typed in."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _study_report import markdown

    (found,) = STUDY_TABLE.findall(README.read_text())
    study = json.loads((ROOT / "benchmarks" / "results" / "study.json").read_text())
    assert found == markdown(study), (
        "README.md's study table differs from benchmarks/results/study.json: replace the lines "
        "between its study-table markers with `.venv/bin/python benchmarks/study.py --markdown`"
    )


def test_a_command_past_its_timeout_is_killed_with_the_processes_it_started(tmp_path):
    script = "sleep 60 & echo $! > child; wait"
    code, output = run_script(script, tmp_path, dict(os.environ), timeout=1)
    assert code == 124 and "timed out after 1 s" in output
    child = Path(f"/proc/{(tmp_path / 'child').read_text().strip()}/status")
    deadline = time.monotonic() + 5
    while child.exists() and "zombie" not in child.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child.exists() or "zombie" in child.read_text(), "the background sleep survived"
