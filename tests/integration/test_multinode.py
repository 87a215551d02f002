"""Two nodes on one machine: the training command as 2 nodes x 1 process (gloo on localhost), the
way SLURM starts it on two machines (docs/scaling.md, "Training on a SLURM cluster"). Each "node" is started either with
Lightning's own variables (MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE, LOCAL_RANK) or by its
own `torchrun --nnodes 2 --rdzv-backend c10d`, and has its own run directory, like a node with its
own disk."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.utils import instantiate

from fadm_lightning.config import compose_config

from ..conftest import TEST_THREADS, TINY_OVERRIDES

# 8 training clips (4 persons x 2), one item per clip and epoch: each rank gets 4 of them
DATA = [
    "data.generator.num_train_ids=4",
    "data.generator.clips_per_id=2",
    "data.id_sampling=false",
    "data.num_repeats=1",
]
NODES = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["lightning_env", "torchrun"])
def test_two_nodes_split_each_epoch_and_rank_zero_writes_the_checkpoints(
    launch, tmp_path, shared_cache
):
    overrides = [*TINY_OVERRIDES, *DATA, f"paths.cache_dir={shared_cache}"]
    # the dataset first (one writer): the nodes would otherwise both generate it at once
    datamodule = instantiate(compose_config("train", overrides).data)
    datamodule.prepare_data()
    clips = {p.name for p in (Path(datamodule.root) / "train").iterdir()}
    assert len(clips) == 8

    seen = tmp_path / "seen"
    port = free_port()
    command = [
        "-m", "fadm_lightning.train", *overrides,
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.strategy=ddp",
        "trainer.num_nodes=2", "trainer.devices=1",
        "trainer.max_epochs=2", "test=false", "num_threads=1",
        "+callbacks.seen_items._target_=fadm_lightning.callbacks.seen_items.SeenItemsCallback",
        f"+callbacks.seen_items.dirpath={seen}",
    ]  # fmt: skip
    if launch == "torchrun":  # rendezvous on localhost; torchrun sets the ranks
        command = [
            "-m", "torch.distributed.run", "--nnodes", str(NODES), "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", *command,
        ]  # fmt: skip
    skip = ("SLURM_", "TORCHELASTIC", "MASTER_", "NODE_RANK", "WORLD_SIZE", "LOCAL_RANK", "RANK")
    base = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    base.update(FADM_ROOT=str(tmp_path), OMP_NUM_THREADS=str(TEST_THREADS))
    if launch == "lightning_env":
        base.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(NODES), LOCAL_RANK="0"
        )
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, *command, f"hydra.run.dir={tmp_path / f'node{node}'}"],
            env={**base, "NODE_RANK": str(node)} if launch == "lightning_env" else base,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in range(NODES)
    ]
    try:
        logs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    elapsed = time.monotonic() - start
    for node, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"node {node}:\n{log[-4000:]}"
    print(f"2 nodes x 1 process ({launch}), 2 epochs: {elapsed:.0f} s")

    # 1. every rank saw its own part of each epoch: disjoint, together every clip once
    records = {
        rank: [json.loads(line) for line in (seen / f"rank{rank}.jsonl").read_text().splitlines()]
        for rank in range(NODES)
    }
    split = []  # per epoch: the clips of rank 0
    for epoch in (0, 1):
        parts = [
            [name for r in records[rank] if r["epoch"] == epoch for name in r["items"]]
            for rank in range(NODES)
        ]
        assert all(len(part) == 4 and len(set(part)) == 4 for part in parts), parts
        assert not set(parts[0]) & set(parts[1]), parts
        assert set(parts[0]) | set(parts[1]) == clips
        split.append(set(parts[0]))
    assert split[0] != split[1]  # DistributedSampler.set_epoch: another split each epoch
    assert all(r["world_size"] == NODES for rs in records.values() for r in rs)

    # 2. one set of checkpoints, written by rank 0 only: on its node's disk, none on the other's
    # (Lightning's variables: node 0 is rank 0; torchrun's rendezvous may give rank 0 to either)
    written = {
        node: sorted(p.name for p in (tmp_path / f"node{node}").glob("checkpoints/*"))
        for node in range(NODES)
    }
    (node0,) = [node for node, names in written.items() if names]
    assert len(written[node0]) == 2 and "last.ckpt" in written[node0], written  # best and last
    if launch == "lightning_env":
        assert node0 == 0
