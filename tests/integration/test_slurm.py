"""SLURM through Hydra's submitit launcher, proven on CPU (docs/scaling.md, "Training on a SLURM cluster"): the launcher
presets, the sbatch script they give, Lightning's SLURM environment, and a preempted job that
saves its hpc checkpoint, requeues itself and continues from it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from fadm_lightning.config import compose_config
from fadm_lightning.train import resume_checkpoint

from ..conftest import CONFIG_DIR, REPO, TEST_THREADS, TINY_OVERRIDES

LAUNCHERS = Path(CONFIG_DIR) / "hydra" / "launcher"
# our yaml extends the plugin's config of the same name on purpose (see the first test)
pytestmark = pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema")
PAPER_TWO_NODES = ["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=2"]


def slurm_env(job_id: str = "4242", **extra: str) -> dict[str, str]:
    """The variables srun gives the one task of a one-node, one-task job."""
    return {
        "SLURM_JOB_ID": job_id,
        "SLURM_JOB_NAME": "train",  # not "bash" / "interactive": Lightning's SLURM mode is on
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "1",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        **extra,
    }


@pytest.fixture
def no_slurm(monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)


# -- the launcher presets ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("launcher", "schema"), [("submitit_slurm", SlurmQueueConf), ("submitit_local", LocalQueueConf)]
)
def test_our_launcher_presets_are_used_and_extend_the_plugin_configs(launcher, schema):
    """The plugin registers hydra/launcher/<name> in the ConfigStore (searched last); our yaml of
    the same name is found first, and Hydra merges it onto the plugin's dataclass."""
    with pytest.warns(UserWarning, match="validated against ConfigStore schema"):
        cfg = compose_config(
            "train", [f"hydra/launcher={launcher}", *PAPER_TWO_NODES], return_hydra_config=True
        )
    node = cfg.hydra.launcher
    typed = OmegaConf.get_type(node)  # Hydra's plugin scan imports the module again: compare names
    assert (typed.__module__, typed.__qualname__) == (schema.__module__, schema.__qualname__)
    ours = OmegaConf.load(LAUNCHERS / f"{launcher}.yaml")
    # the yaml alone sets every field of the dataclass: it does not depend on the merge
    assert set(ours) == {f.name for f in dataclasses.fields(schema)}
    assert node.tasks_per_node == (2 if launcher == "submitit_slurm" else 1)
    assert node.gpus_per_node == 2
    if launcher == "submitit_slurm":
        assert node.nodes == 2  # tied to trainer.num_nodes
        assert node.timeout_min == 1440 and node.cpus_per_task == 10 and node.mem_gb == 120
        assert node.signal_delay_s == 120 and node.max_num_timeout == 0
        assert OmegaConf.to_container(node.additional_parameters, resolve=True) == {
            "signal": "USR1@120",
            "requeue": True,
        }
    else:
        assert node.nodes == 1 and node.timeout_min == 10080


def test_slurm_preset_follows_the_trainer():
    cfg = compose_config(
        "train",
        ["hydra/launcher=submitit_slurm", "trainer=ddp", "hydra.launcher.signal_delay_s=300"],
        return_hydra_config=True,
    )
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (1, 4, 4)
    assert launcher.additional_parameters.signal == "USR1@300"
    default = compose_config("train", ["hydra/launcher=submitit_slurm"], return_hydra_config=True)
    assert default.hydra.launcher.nodes == 1  # trainer=default has no num_nodes


@pytest.mark.parametrize("command", ["evaluate", "preprocess", "animate", "rectify"])
def test_launcher_presets_resolve_for_commands_without_a_trainer(command):
    for launcher, gpus in (("submitit_slurm", None), ("submitit_local", 1)):
        cfg = compose_config(command, [f"hydra/launcher={launcher}"], return_hydra_config=True)
        node = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
        assert (node["nodes"], node["tasks_per_node"], node["gpus_per_node"]) == (1, 1, gpus)


def test_sbatch_script_of_the_two_node_paper_setting(tmp_path, monkeypatch):
    """The sbatch script that the plugin's launch() has submitit write from our preset."""
    import submitit

    (tmp_path / "srun").write_text("#!/bin/sh\n")  # submitit's SLURM executor wants srun on PATH
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    scripts = []

    def submit_nothing(executor, fn, *iterables):  # instead of sbatch: keep the script
        scripts.append(executor._executor._make_submission_file_text("python -m x", "uid"))
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit_nothing)
    cfg = compose_config(
        "train",
        ["hydra/launcher=submitit_slurm", *PAPER_TWO_NODES, "hydra.launcher.partition=gpu",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        return_hydra_config=True,
    )  # fmt: skip
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    launcher.launch([["seed=1"]], initial_job_idx=0)
    (script,) = scripts
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --mem=120GB",
        "#SBATCH --time=1440",
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=USR1@120",  # Lightning's requeue signal, not submitit's USR2
        "#SBATCH --requeue",
        "#SBATCH --job-name=app",  # the Hydra job name (compose API: "app"; the command: "train")
    ):
        assert line in script.splitlines(), (line, script)
    assert "USR2" not in script


# -- Lightning's SLURM environment -------------------------------------------------------------
@pytest.mark.parametrize("trainer", ["slurm", "ddp"])
def test_a_slurm_job_gets_lightnings_auto_requeue_on_sigusr1(
    trainer, tmp_path, monkeypatch, no_slurm
):
    """trainer=slurm builds the SLURM environment from the config; with trainer=ddp Lightning
    picks the same one by itself inside a SLURM job."""
    for key, value in slurm_env().items():
        monkeypatch.setenv(key, value)
    cfg = compose_config(
        "train", [f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=1"]
    )
    trainer_ = instantiate(cfg.trainer, default_root_dir=str(tmp_path), logger=False)
    environment = trainer_.strategy.cluster_environment
    assert type(environment).__name__ == "SLURMEnvironment"
    assert environment.auto_requeue and environment.requeue_signal == signal.SIGUSR1


# -- which checkpoint a (re)started job continues from -------------------------------------------
class _Trainer:  # what resume_checkpoint reads of a Trainer
    def __init__(self, root: Path) -> None:
        self.default_root_dir = str(root)
        self.checkpoint_callback = ModelCheckpoint(dirpath=root / "checkpoints")


def test_resume_checkpoint_prefers_the_run_dirs_newest_in_a_slurm_job(
    tmp_path, monkeypatch, no_slurm
):
    trainer = _Trainer(tmp_path)
    cfg = OmegaConf.create({"ckpt_path": "/given.ckpt"})
    assert resume_checkpoint(cfg, trainer) == "/given.ckpt"  # not SLURM, nothing there
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    assert resume_checkpoint(cfg, trainer) == "/given.ckpt"  # outside SLURM: never on its own

    for key, value in slurm_env().items():
        monkeypatch.setenv(key, value)
    assert resume_checkpoint(cfg, trainer) == str(last)  # preempted: last.ckpt
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"")
    os.utime(last, (time.time() - 60,) * 2)
    assert resume_checkpoint(cfg, trainer) == str(hpc)  # requeued on the signal: newer
    os.utime(hpc, (time.time() - 120,) * 2)
    assert resume_checkpoint(cfg, trainer) == str(last)  # trained on after the hpc checkpoint
    empty = _Trainer(tmp_path / "new")
    assert resume_checkpoint(OmegaConf.create({"ckpt_path": None}), empty) is None


# -- a preempted job: signal, hpc checkpoint, requeue, resume -------------------------------------
class SignalAtStep(L.Callback):
    """Test helper (built by Hydra in the training subprocess): records the process id and the
    global step at the start of every training batch (:func:`steps_by_process`), and sends
    ``signum`` to its own process once, at the end of the batch that reaches ``step``: what SLURM
    does ``signal_delay_s`` before the time limit."""

    def __init__(self, step: int, record: str, signum: str = "SIGUSR1") -> None:
        self.step, self.record, self.signum = step, Path(record), getattr(signal, signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.record, "a") as f:
            f.write(f"{os.getpid()} {trainer.global_step}\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def steps_by_process(record: Path) -> list[list[int]]:
    """The global steps that :class:`SignalAtStep` recorded, one list per process, in order."""
    runs: dict[str, list[int]] = {}
    for line in record.read_text().splitlines():
        pid, step = line.split()
        runs.setdefault(pid, []).append(int(step))
    return list(runs.values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_requeue_signal_saves_hpc_checkpoint_requeues_and_the_restart_resumes(
    tmp_path, shared_cache
):
    # `scontrol` on PATH records its arguments and, as SLURM does when it requeues a running
    # job, terminates the job (SIGTERM to the training process, which called it)
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls.txt"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nkill -TERM "$PPID"\n')
    scontrol.chmod(0o755)
    steps, run_dir = tmp_path / "steps.txt", tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(slurm_env(job_id="4242"))
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}",
        MASTER_PORT=str(free_port()),
        FADM_ROOT=str(tmp_path),
        OMP_NUM_THREADS=str(TEST_THREADS),
    )
    command = [
        sys.executable, "-m", "fadm_lightning.train", *TINY_OVERRIDES,
        "trainer=slurm", "trainer.accelerator=cpu", "trainer.devices=1",
        "trainer.max_epochs=3",  # 3 epochs x 2 batches: steps 0..5
        "test=false", "num_threads=1",
        f"paths.cache_dir={shared_cache}", f"hydra.run.dir={run_dir}",
        f"+callbacks.preempt._target_={__name__}.SignalAtStep",
        "+callbacks.preempt.step=3", f"+callbacks.preempt.record={steps}",
    ]  # fmt: skip

    # 1. the job: SIGUSR1 after step 3 (mid epoch 1) → hpc checkpoint, scontrol requeue, SIGTERM
    first = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    log = first.stdout + first.stderr
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    assert hpc.is_file(), log[-3000:]
    assert calls.read_text().split("\n")[0] == "requeue 4242", log[-3000:]
    assert steps_by_process(steps) == [[0, 1, 2]], log[-3000:]
    saved = torch.load(hpc, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 3

    # 2. the requeued job: the same command in the same run directory
    second = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert "hpc_ckpt_1.ckpt" in log  # "Restoring states from the checkpoint path at …"
    assert steps_by_process(steps) == [[0, 1, 2], [3, 4, 5]], log[-3000:]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 6 and last["epoch"] == 2
    assert len(calls.read_text().splitlines()) == 1  # no second requeue


# -- the same path on one machine: hydra/launcher=submitit_local -----------------------------------
def prepare_data(overrides: list[str]) -> None:
    """Generate the synthetic dataset first: the jobs of a sweep start at once and would all
    write it (the writer is not safe against that)."""
    instantiate(compose_config("train", overrides).data).prepare_data()


def run_sweep(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(FADM_CACHE_DIR=str(cache), OMP_NUM_THREADS=str(TEST_THREADS))
    command = [sys.executable, "-m", "fadm_lightning.train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def assert_two_submitit_jobs(sweep: Path, log: str) -> None:
    for num, seed in ((0, 1), (1, 2)):
        run = sweep / str(num)
        overrides = OmegaConf.load(run / ".hydra" / "overrides.yaml")
        assert f"seed={seed}" in overrides, (run, overrides)
        assert (run / "train.log").is_file() and (run / "test_metrics.json").is_file(), log[-3000:]
    # each run was its own submitit job (pickled, started as its own process)
    job_logs = sorted((sweep / ".submitit").glob("*/*_0_log.out"))
    assert len(job_logs) == 2, log[-3000:]
    for job_log in job_logs:
        assert "Job completed successfully" in job_log.read_text()


@pytest.mark.slow  # keeps the default suite under 15 min on 2 cores (make test-slow runs it)
def test_submitit_local_sweep_runs_each_seed_as_a_job(tmp_path, shared_cache):
    """The launcher path of the outside check's line, on the tiny world (fast)."""
    prepare_data([*TINY_OVERRIDES, f"paths.cache_dir={shared_cache}"])
    sweep = tmp_path / "DIR"
    proc = run_sweep(
        ["-m", "hydra/launcher=submitit_local", *TINY_OVERRIDES, "++trainer.fast_dev_run=true",
         "logger=null", "seed=1,2", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        shared_cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_two_submitit_jobs(sweep, proc.stdout + proc.stderr)


@pytest.mark.slow
def test_submitit_local_exact_line(tmp_path, shared_cache):
    """`python -m fadm_lightning.train -m hydra/launcher=submitit_local ++trainer.fast_dev_run=true
    logger=null seed=1,2 hydra.sweep.dir=DIR`, exactly (the default synthetic world; ~1 min)."""
    prepare_data([f"paths.cache_dir={shared_cache}"])
    sweep = tmp_path / "DIR"
    proc = run_sweep(
        ["-m", "hydra/launcher=submitit_local", "++trainer.fast_dev_run=true", "logger=null",
         "seed=1,2", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        shared_cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_two_submitit_jobs(sweep, proc.stdout + proc.stderr)


# -- the whole chain on a fake SLURM: Hydra → submitit → sbatch → srun → requeue → resume ----------
# One Python script answers as sbatch, srun, sacct and scontrol (by the name it is called with),
# on this machine, keeping its state in $FAKE_SLURM_DIR. sbatch starts the job script (each task
# of an array) in its own session; srun starts SLURM_NTASKS tasks with the variables SLURM gives
# them; `scontrol requeue ID` records the call and, from a detached process, does what SLURM
# does: SIGTERM to the running job, then the same job script again, with the same variables.
FAKE_SLURM = r"""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_DIR"])
name = Path(sys.argv[0]).name


def start(job):  # the job script, in a session of its own
    log = open(state / f"{job['id']}.batch.log", "a")
    proc = subprocess.Popen(["bash", job["script"]], env=job["env"], stdout=log, stderr=log,
                            start_new_session=True)
    job["pid"] = proc.pid
    (state / f"{job['id']}.json").write_text(json.dumps(job))


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


if sys.argv[1:2] == ["_requeue"]:  # the detached part of `scontrol requeue ID`
    job = json.loads((state / f"{sys.argv[2]}.json").read_text())
    job["requeued"] = True
    (state / f"{job['id']}.json").write_text(json.dumps(job))
    os.killpg(job["pid"], signal.SIGTERM)
    deadline = time.time() + 60  # KillWait
    while alive(job["pid"]) and time.time() < deadline:
        time.sleep(0.2)
    if alive(job["pid"]):
        os.killpg(job["pid"], signal.SIGKILL)
    time.sleep(1.5)  # back in the queue: a new ${now:...} would differ by now
    job["env"]["SLURM_RESTART_COUNT"] = "1"
    del job["requeued"]
    start(job)
elif name == "sbatch":
    script = Path(sys.argv[1]).read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, re.M))
    array_id = 5000 + len(list(state.glob("job_*.sh")))
    (state / f"job_{array_id}.sh").write_text(script)
    tasks = int(re.match(r"0-(\d+)", flags["array"]).group(1)) + 1 if "array" in flags else 0
    nodes, per_node = int(flags.get("nodes", 1)), int(flags.get("ntasks-per-node", 1))
    for task in range(tasks) if tasks else [None]:  # submitit sends one job as a plain job
        env = dict(os.environ, SLURM_JOB_ID=str(array_id + (task or 0)),
                   SLURM_JOB_NAME=flags.get("job-name", "x"), SLURM_NNODES=str(nodes),
                   SLURM_NTASKS_PER_NODE=str(per_node), SLURM_NTASKS=str(nodes * per_node),
                   SLURM_NODELIST="127.0.0.1", SLURM_JOB_NODELIST="127.0.0.1",
                   SLURM_RESTART_COUNT="0")
        if task is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(array_id), SLURM_ARRAY_TASK_ID=str(task))
        job_id = str(array_id) if task is None else f"{array_id}_{task}"
        start({"id": job_id, "script": str(state / f"job_{array_id}.sh"), "env": env})
    print(f"Submitted batch job {array_id}")
elif name == "srun":
    args, files = sys.argv[1:], {}
    while args[0].startswith("--"):
        option = args.pop(0)
        if option in ("--output", "--error"):
            files[option] = args.pop(0)
    procs = []
    for rank in range(int(os.environ["SLURM_NTASKS"])):
        per_node = int(os.environ["SLURM_NTASKS_PER_NODE"])
        env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % per_node),
                   SLURM_NODEID=str(rank // per_node), SLURM_STEP_ID="0")
        keys = {"%A": env.get("SLURM_ARRAY_JOB_ID", ""), "%a": env.get("SLURM_ARRAY_TASK_ID", ""),
                "%j": env["SLURM_JOB_ID"], "%t": str(rank)}
        out = {}
        for option, pattern in files.items():
            for key, value in keys.items():
                pattern = pattern.replace(key, value)
            Path(pattern).parent.mkdir(parents=True, exist_ok=True)
            out[option] = open(pattern, "a")
        procs.append(subprocess.Popen(args, env=env, stdout=out.get("--output"),
                                      stderr=out.get("--error", out.get("--output"))))
    sys.exit(max(abs(p.wait()) for p in procs))
elif name == "sacct":
    print("JobID|State|NodeList")
    for path in state.glob("*.json"):
        job = json.loads(path.read_text())
        status = "PENDING" if job.get("requeued") else "RUNNING" if alive(job["pid"]) else "FAILED"
        print(f"{job['id']}|{status}|127.0.0.1")  # (a finished job has its result file)
elif name == "scontrol":
    with open(state / "scontrol.log", "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\n")
    if sys.argv[1] == "requeue":
        subprocess.Popen([sys.argv[0], "_requeue", sys.argv[2]], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""


def fake_slurm(tmp_path: Path) -> tuple[Path, Path]:
    """The bin folder with sbatch, srun, sacct and scontrol, and the state folder."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    state.mkdir()
    tool = bin_dir / "fake_slurm.py"
    tool.write_text(f"#!{sys.executable}\n{FAKE_SLURM}")
    for command in ("sbatch", "srun", "sacct", "scontrol"):
        (bin_dir / command).symlink_to(tool)
    tool.chmod(0o755)
    return bin_dir, state


@pytest.mark.slow  # ~35 s on 2 cores
def test_submitit_slurm_job_requeued_on_its_signal_resumes_in_the_same_run_dir(
    tmp_path, shared_cache
):
    """The launcher preset through submitit to (fake) SLURM: the job gets USR1 after step 3,
    saves its hpc checkpoint and requeues itself; SLURM ends it and starts the same job script,
    which reloads the same pickled job: it finds the same run directory (the sweep dir is
    timestamped when the sweep is launched, not when a job starts) and resumes at step 3."""
    bin_dir, state = fake_slurm(tmp_path)
    prepare_data([*TINY_OVERRIDES, f"paths.cache_dir={shared_cache}"])
    steps = tmp_path / "steps.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}",
        FAKE_SLURM_DIR=str(state),
        FADM_ROOT=str(tmp_path),
        MASTER_PORT=str(free_port()),
        OMP_NUM_THREADS=str(TEST_THREADS),
    )
    command = [
        sys.executable, "-m", "fadm_lightning.train", "-m", "hydra/launcher=submitit_slurm",
        *TINY_OVERRIDES, "trainer=slurm", "trainer.accelerator=cpu", "trainer.devices=1",
        "trainer.max_epochs=3", "test=false", "num_threads=1", f"paths.cache_dir={shared_cache}",
        f"+callbacks.preempt._target_={__name__}.SignalAtStep",
        "+callbacks.preempt.step=3", f"+callbacks.preempt.record={steps}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    finally:  # the fake jobs run in sessions of their own: end any that is left
        for job in state.glob("*.json"):
            try:
                os.killpg(json.loads(job.read_text())["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    job_logs = "".join(p.read_text() for p in tmp_path.glob("logs/**/.submitit/*/*_log.*"))
    log = proc.stdout + proc.stderr + job_logs
    assert proc.returncode == 0, log[-4000:]

    # the sbatch script: one task per device, Lightning's signal, requeueable
    (script,) = [p.read_text().splitlines() for p in state.glob("job_*.sh")]
    for line in ("#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR1@120",
                 "#SBATCH --requeue", "#SBATCH --job-name=train"):  # fmt: skip
        assert line in script, (line, script)
    # Lightning requeued the job it ran in, once (one run: submitit sends a plain job, no array)
    assert (state / "scontrol.log").read_text().splitlines() == ["requeue 5000"]
    # one run directory, used by both starts of the job
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    run_dir = sweep / "0"
    hpc = torch.load(run_dir / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=False)
    assert hpc["global_step"] == 3
    # SLURM's SIGTERM comes a moment after the requeue: the first start may train on a little
    # (and save checkpoints/last.ckpt at the end of the epoch); the second one continues from the
    # newest checkpoint of the run directory, whichever it is, and finishes
    first, second = steps_by_process(steps)
    assert first[:3] == [0, 1, 2] and second == list(range(second[0], 6)), (first, second)
    (restored,) = re.findall(r"Restoring states from the checkpoint path at (\S+)", job_logs)
    assert restored in (
        str(run_dir / "hpc_ckpt_1.ckpt"),
        str(run_dir / "checkpoints" / "last.ckpt"),
    )
    assert second[0] == 3 if restored.endswith("hpc_ckpt_1.ckpt") else second[0] > 3
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 6
