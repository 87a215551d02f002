"""The real-face recipe: raw talking-head videos → Table 1 on held-out persons (docs/real_faces.md).

``python -m fadm_lightning.recipe raw_dir=DIR work_dir=DIR [split=FILE.json] [preset=tiny|cpu|paper]``

Stages, in order, each a run of an existing command with its own overrides (``conf/preset/*.yaml``)
and its output in ``work_dir``:

==============  ===============================================================================
``preprocess``  ``python -m fadm_lightning.preprocess``: raw videos → 256² face clips, ``clips/all/``
``split``       persons → ``data/{train,val,test}/`` (links to the clips): the given split file or
                a deterministic split; the three sets of persons are disjoint (checked)
``coarse``      ``python -m fadm_lightning.train``: FOMM on the training persons, ``runs/coarse``
``refiner``     ``python -m fadm_lightning.train``: FADM over that frozen FOMM with the offline
                landmark attributes, one run per variant (``runs/refiner_<variant>``); each keeps
                its best checkpoint on the validation persons
``select``      ``python -m fadm_lightning.benchmarks.sampling split=val``: every variant's best
                checkpoint with every candidate sampler on the validation persons; the best PSNR
                wins (``select/selection.json``)
``evaluate``    ``python -m fadm_lightning.evaluate`` of the chosen model on the test persons,
                once: reconstruction (Table 1) and cross-identity (FID, identity similarity)
``export``      ``python -m fadm_lightning.export``: ``pretrained/`` with the chosen sampler
``report``      ``report.md`` (printed, and logged to W&B), the grid, videos and learning curves
==============  ===============================================================================

A finished stage leaves ``stages/<stage>.json`` (its command, seconds and outputs) and is skipped
by a rerun; an interrupted training resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fadm_lightning.config import quote
from fadm_lightning.sampler import SamplerConfig
from fadm_lightning.workflows.report import choose, write_report

STAGES = ("preprocess", "split", "coarse", "refiner", "select", "evaluate", "export", "report")
SPLITS = ("train", "val", "test")


class RecipeError(RuntimeError):
    """A stage failed or its input is wrong; the message names the file or the stage's log."""


@dataclass
class Recipe:
    """The stages of one work folder; ``cfg`` is the composed ``conf/recipe.yaml``."""

    cfg: DictConfig
    log: Callable[[str], None] = print
    work: Path = field(init=False)
    began: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.work = Path(self.cfg.work_dir).resolve()
        self.preset = self.cfg.preset
        self.python = self.cfg.python or sys.executable

    # ------------------------------------------------------------------ folders
    @property
    def clips_dir(self) -> Path:
        return self.work / "clips"

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    def run_dir(self, name: str) -> Path:
        return self.work / "runs" / name

    @property
    def coarse_checkpoint(self) -> Path:
        return self.run_dir("coarse") / "fomm_checkpoint.pth.tar"

    def record_path(self, stage: str) -> Path:
        return self.work / "stages" / f"{stage}.json"

    def record(self, stage: str) -> dict[str, Any] | None:
        path = self.record_path(stage)
        return json.loads(path.read_text()) if path.is_file() else None

    def _write_record(self, stage: str, record: dict[str, Any]) -> None:
        path = self.record_path(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, path)

    # ------------------------------------------------------------------ running
    def command(self, module: str, overrides: Sequence[str], stage: str) -> list[str]:
        extra = [str(x) for x in (self.cfg.stage_overrides or {}).get(stage, [])]
        return [self.python, "-m", module, *[str(o) for o in overrides], *extra]

    def run(self, stage: str, label: str, command: list[str]) -> float:
        """Run one command, its output into ``logs/<label>.log``; a heartbeat every minute."""
        log_path = self.work / "logs" / f"{label}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log(f"[recipe] {label}: {' '.join(command[1:])}")
        self.log(f"[recipe] {label}: log {log_path}")
        env = dict(os.environ)
        env.setdefault("WANDB_MODE", "offline")
        began = time.perf_counter()
        with log_path.open("ab") as out:
            out.write(f"\n$ {' '.join(command)}\n".encode())
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            next_beat = began + 60
            while process.poll() is None:
                time.sleep(0.5)
                if time.perf_counter() >= next_beat:
                    next_beat += 60
                    self.log(
                        f"[recipe] {label}: running, {_minutes(time.perf_counter() - began)}; "
                        f"{_last_line(log_path)}"
                    )
        seconds = time.perf_counter() - began
        if process.returncode != 0:
            raise RecipeError(
                f"stage {stage} ({label}) failed with exit status {process.returncode} after "
                f"{_minutes(seconds)}; its output: {log_path}\n{_tail(log_path)}"
            )
        self.log(f"[recipe] {label}: done in {_minutes(seconds)}")
        return seconds

    # ------------------------------------------------------------------ stages
    def clips(self) -> list[str]:
        """The clips preprocessing kept (``clips/all/``)."""
        folder = self.clips_dir / "all"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

    def stage_preprocess(self) -> dict[str, Any]:
        raw = Path(self.cfg.raw_dir)  # checked before any stage runs
        overrides = [
            f"input_dir={raw.resolve()}",
            f"output_dir={self.clips_dir}",
            "split=all",
            "progress=false",
            *self.preset.preprocess,
        ]
        seconds = self.run(
            "preprocess",
            "preprocess",
            self.command("fadm_lightning.preprocess", overrides, "preprocess"),
        )
        clips = self.clips()
        if not clips:
            raise RecipeError(
                f"preprocess kept no clip from {raw} (see {self.clips_dir}/preprocess_summary.json)"
            )
        return {"seconds": seconds, "clips": len(clips)}

    def stage_split(self) -> dict[str, Any]:
        from fadm_lightning.data.voxceleb import person_id

        began = time.perf_counter()
        by_person: dict[str, list[str]] = {}
        for clip in self.clips():
            by_person.setdefault(person_id(clip), []).append(clip)
        persons = split_persons(
            sorted(by_person),
            self.cfg.split,
            float(self.cfg.test_fraction),
            float(self.cfg.val_fraction),
        )
        max_clips = self.preset.get("max_clips")
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        chosen: dict[str, list[str]] = {}
        for split in SPLITS:
            names = [c for person in persons[split] for c in by_person.get(person, [])]
            if max_clips:
                names = names[: int(max_clips)]
            if not names:
                raise RecipeError(
                    f"split: no clip of the {split} persons {persons[split]} was kept by "
                    f"preprocess (clips of: {sorted(by_person)})"
                )
            folder = self.data_dir / split
            folder.mkdir(parents=True)
            for name in names:
                os.symlink(os.path.relpath(self.clips_dir / "all" / name, folder), folder / name)
            chosen[split] = names
        summary = {"persons": persons, "clips": chosen}
        (self.data_dir / "split.json").write_text(json.dumps(summary, indent=1))
        self.log(
            "[recipe] split: "
            + "; ".join(f"{s} {len(persons[s])} persons, {len(chosen[s])} clips" for s in SPLITS)
        )
        return {"seconds": time.perf_counter() - began, **summary}

    def _data_overrides(self) -> list[str]:
        return [
            f"data.root={self.data_dir}",
            f"data.image_size={int(self.preset.image_size)}",
            "data.val_split=val",  # the recipe's own validation persons (data/val)
            "data.val_persons=null",
            f"data.cache_dir={self.work / '.cache' / 'index'}",
        ]

    def _train(self, stage: str, name: str, overrides: Sequence[str]) -> dict[str, Any]:
        run_dir = self.run_dir(name)
        last = run_dir / "checkpoints" / "last.ckpt"
        resume = [f"ckpt_path={last}"] if last.is_file() else []
        if resume:
            self.log(f"[recipe] {name}: resuming from {last}")
        overrides = [
            *overrides,
            *self._data_overrides(),
            f"hydra.run.dir={run_dir}",
            # the same folder when stage_overrides make it a multirun on a launcher (-m)
            f"hydra.sweep.dir={run_dir}",
            "hydra.sweep.subdir=.",
            f"num_threads={int(self.preset.threads)}",
            f"seed={int(self.cfg.seed)}",
            "logger=csv",
            *resume,
        ]
        seconds = self.run(stage, name, self.command("fadm_lightning.train", overrides, stage))
        return {"seconds": seconds, "run_dir": str(run_dir), "resumed": bool(resume)}

    def stage_coarse(self) -> dict[str, Any]:
        out = self._train("coarse", "coarse", list(self.preset.coarse))
        if not self.coarse_checkpoint.is_file():
            raise RecipeError(f"coarse: the FOMM run wrote no {self.coarse_checkpoint}")
        metrics = self.run_dir("coarse") / "test_metrics.json"
        out["test_metrics"] = json.loads(metrics.read_text()) if metrics.is_file() else {}
        out["checkpoint"] = str(self.coarse_checkpoint)
        return out

    def variants(self) -> dict[str, list[str]]:
        return {str(k): [str(o) for o in v] for k, v in self.preset.variants.items()}

    def stage_refiner(self) -> dict[str, Any]:
        done = dict((self.record("refiner_partial") or {}).get("variants", {}))
        for variant, extra in self.variants().items():
            if variant in done:
                self.log(f"[recipe] refiner {variant}: done before, skipped")
                continue
            overrides = [
                *self.preset.refiner,
                *self.preset.get("refiner_coarse", ["coarse=fomm_small"]),
                f"coarse.checkpoint={self.coarse_checkpoint}",
                *extra,
            ]
            out = self._train("refiner", f"refiner_{variant}", overrides)
            best = best_checkpoint(Path(out["run_dir"]))
            done[variant] = {**out, "best_checkpoint": str(best), "overrides": extra}
            self._write_record("refiner_partial", {"variants": done})
        return {"seconds": sum(v["seconds"] for v in done.values()), "variants": done}

    def stage_select(self) -> dict[str, Any]:
        refiner = self.record("refiner") or {}
        rows = []
        seconds = 0.0
        folder = self.work / "select"
        folder.mkdir(parents=True, exist_ok=True)
        for variant, info in refiner.get("variants", {}).items():
            table = folder / f"{variant}.csv"
            if not table.is_file():
                overrides = [
                    f"ckpt={quote(info['best_checkpoint'])}",
                    "split=val",
                    f"threads={int(self.preset.threads)}",
                    f"csv={quote(table)}",
                    f"overrides=[{','.join(quote(o) for o in self._data_overrides())}]",
                    f"samplers=[{','.join(quote(s) for s in self.preset.samplers)}]",
                ]
                seconds += self.run(
                    "select",
                    f"select_{variant}",
                    self.command("fadm_lightning.benchmarks.sampling", overrides, "select"),
                )
            names = {setting_label(str(x)): str(x) for x in self.preset.samplers}
            with table.open() as f:
                for row in csv.DictReader(f):
                    rows.append(
                        {
                            "variant": variant,
                            "checkpoint": info["best_checkpoint"],
                            "setting": names.get(row["frames"], row["frames"]),
                            **row,
                        }
                    )
        try:
            chosen = choose(rows)
        except ValueError as err:
            raise RecipeError(f"select: {err}") from err
        selection = {"rows": rows, "chosen": chosen}
        (folder / "selection.json").write_text(json.dumps(selection, indent=1))
        self.log(
            f"[recipe] select: {chosen['variant']} with sampler {chosen['setting']} "
            f"(validation persons: {float(chosen['psnr']):.2f} dB vs coarse {chosen['coarse_psnr']})"
        )
        return {"seconds": seconds, **selection}

    def chosen(self) -> dict[str, Any]:
        record = self.record("select")
        if record is None:
            raise RecipeError("the select stage has not run")
        return record["chosen"]

    def stage_evaluate(self) -> dict[str, Any]:
        chosen = self.chosen()
        sampler = sampler_overrides(chosen["setting"], prefix="sampler.")
        frames = self.preset.get("test_frames")
        common = [
            f"ckpt={chosen['checkpoint']}",
            *sampler,
            f"num_threads={int(self.preset.threads)}",
            f"device={self.preset.get('device', 'cpu')}",
            *self.preset.evaluate,
            f'ckpt_overrides=["data.root={self.data_dir}",'
            f'"data.test_max_frames={"null" if frames is None else int(frames)}",'
            '"data.test_frame_stride=1"]',
        ]
        out: dict[str, Any] = {"seconds": 0.0}
        protocols = [("reconstruction", "[l1,psnr,ssim,stlpips,akd,aed,tdiff,flicker]", [])]
        test_persons = (self.record("split") or {}).get("persons", {}).get("test", [])
        if len(test_persons) >= 2 and self.preset.get("cross_identity") is not None:
            protocols.append(("cross_identity", "[fid,csim]", list(self.preset.cross_identity)))
        else:
            out["cross_identity_skipped"] = (
                f"cross-identity reenactment needs ≥ 2 test persons, the split has {len(test_persons)}"
            )
        for protocol, metrics, extra in protocols:
            run_dir = self.work / "eval" / protocol
            overrides = [
                *common,
                f"protocol={protocol}",
                f"metrics.{protocol}={metrics}",
                f"hydra.run.dir={run_dir}",
                "baselines=[copy_source]" if protocol == "reconstruction" else "baselines=[]",
                *extra,
            ]
            out["seconds"] += self.run(
                "evaluate",
                f"evaluate_{protocol}",
                self.command("fadm_lightning.evaluate", overrides, "evaluate"),
            )
            out[protocol] = str(run_dir / "results.json")
        return out

    def stage_export(self) -> dict[str, Any]:
        chosen = self.chosen()
        output = self.work / "pretrained"
        results = self.work / "eval" / "reconstruction" / "results.json"
        overrides = sampler_overrides(chosen["setting"], prefix="model.sampler.")
        command = self.command(
            "fadm_lightning.export",
            [
                f"ckpt={chosen['checkpoint']}",
                f"output={output}",
                f"results={results}" if results.is_file() else "results=null",
                "name=fadm_real_faces_" + str(self.preset.name),
                "overwrite=true",
                "overrides=[" + ",".join(f'"{o}"' for o in overrides) + "]",
            ],
            "export",
        )
        seconds = self.run("export", "export", command)
        return {"seconds": seconds, "folder": str(output)}

    def stage_report(self) -> dict[str, Any]:
        began = time.perf_counter()
        text = write_report(self)
        print(text, flush=True)
        return {"seconds": time.perf_counter() - began, "report": str(self.work / "report.md")}

    # ------------------------------------------------------------------ the whole recipe
    def __call__(self) -> int:
        wanted = list(self.cfg.stages) if self.cfg.stages else list(STAGES)
        unknown = [s for s in wanted if s not in STAGES]
        if unknown:
            raise RecipeError(f"stages: unknown {unknown}; the stages are {list(STAGES)}")
        raw = Path(self.cfg.raw_dir)
        if "preprocess" in wanted and self.record("preprocess") is None and not raw.is_dir():
            raise RecipeError(f"raw_dir={raw}: no such folder (expected raw talking-head videos)")
        if self.cfg.split is not None and not Path(self.cfg.split).is_file():
            raise RecipeError(f"split={self.cfg.split}: no such file")
        self.work.mkdir(parents=True, exist_ok=True)
        for stage in STAGES:
            if stage not in wanted:
                continue
            if stage != "report" and self.record(stage) is not None:
                self.log(f"[recipe] {stage}: done before ({self.record_path(stage)}), skipped")
                continue
            self.log(f"[recipe] {stage}: starting")
            record = getattr(self, f"stage_{stage}")()
            record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            self._write_record(stage, record)
        self.log(f"[recipe] finished in {_minutes(time.perf_counter() - self.began)}: {self.work}")
        return 0


# ---------------------------------------------------------------------- pure helpers
def split_persons(
    persons: Sequence[str],
    split_file: str | os.PathLike | None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
) -> dict[str, list[str]]:
    """Persons of train / val / test: from ``split_file`` (JSON with those three lists) or a
    deterministic split (each person's place is the hash of its id; test first, then validation
    persons carved from the training persons). Raises when a person is in two sets, when a set
    is empty, or when the file is not such a JSON."""
    if split_file is not None:
        path = Path(split_file)
        try:
            given = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RecipeError(f"split={path}: not a readable JSON file ({err})") from err
        if not isinstance(given, dict) or any(not isinstance(given.get(s), list) for s in SPLITS):
            raise RecipeError(
                f'split={path}: expected {{"train": [...], "val": [...], "test": [...]}}'
            )
        out = {s: [str(p) for p in given[s]] for s in SPLITS}
    else:
        if len(persons) < 3:
            raise RecipeError(
                f"a split by person needs at least 3 persons, found {len(persons)}: {list(persons)}"
            )
        ranked = sorted(persons, key=lambda p: hashlib.sha1(p.encode()).hexdigest())
        n_test = max(1, math.ceil(test_fraction * len(ranked)))
        rest = ranked[n_test:]
        n_val = max(1, math.ceil(val_fraction * len(rest)))
        if len(rest) - n_val < 1:
            raise RecipeError(f"too few persons ({len(persons)}) for train, val and test")
        out = {
            "test": sorted(ranked[:n_test]),
            "val": sorted(rest[:n_val]),
            "train": sorted(rest[n_val:]),
        }
    check_disjoint(out)
    return out


def check_disjoint(persons: dict[str, Sequence[str]]) -> None:
    """Raise when a person is in two of train / val / test, or a set is empty."""
    for split in SPLITS:
        if not persons.get(split):
            raise RecipeError(f"split: no {split} person")
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            both = sorted(set(persons[a]) & set(persons[b]))
            if both:
                raise RecipeError(f"split: {both} in both {a} and {b}")


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint on the validation persons (ModelCheckpoint's top-1)."""
    found = sorted(p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    if not found:
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        raise RecipeError(f"{run_dir}/checkpoints: no checkpoint")
    return max(found, key=lambda p: p.stat().st_mtime)


def setting_label(setting: str) -> str:
    """The row name the sampling benchmark gives a ``steps:eta:strength[:clip][:nonoise]``."""
    from fadm_lightning.benchmarks.sampling import setting_name

    return setting_name(SamplerConfig.parse(setting))


def sampler_overrides(setting: str, prefix: str) -> list[str]:
    """``steps:eta:strength[:clip][:nonoise]`` (or a preset's name) → overrides of a command's
    ``sampler.*`` (``prefix="sampler."``) or of a model's own sampler
    (``prefix="model.sampler."``)."""
    knobs = SamplerConfig.parse(setting).as_dict()
    return [
        f"{prefix}{name}={str(value).lower() if isinstance(value, bool) else value}"
        for name, value in knobs.items()
    ]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 2000))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    parts = [p.strip() for p in text.replace("\r", "\n").splitlines() if p.strip()]
    return parts[-1][-160:] if parts else ""


def run(cfg: DictConfig) -> int:
    OmegaConf.resolve(cfg)
    return Recipe(cfg)()
