"""Fuzzed media through every command that reads inputs (issue 25, "fuzzed media").

Each case of ``tests/fuzz_media.py`` (a few hundred malformed or unusual files) goes through
``animate`` as the portrait and as the driving video, ``rectify``, ``preprocess`` (a folder
holding the file) and the web app's jobs (``WebApp.animate`` with the file as the portrait for
an image, ``WebApp.rectify`` for a video), in this process, on the tiny checkpoint of
``test_inference.py``. Every run must end in an output (a readable mp4, or preprocess's
record of the file) or in an expected error (one the commands print as one line) whose one-line
message names the file; never a traceback, never a file left behind.

The default suite runs a seeded sample spread over the categories; ``make test-fuzz`` runs
every case, and writes the docs table with ``FADM_FUZZ_TABLE=docs/fuzz_table.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fadm_lightning.media.video import iter_frames, probe_video
from tests.fuzz_media import FIXTURES, Case, FuzzMedia

from ..conftest import TEST_THREADS
from .test_inference import TINY_256, save_checkpoint, write_video

pytest.importorskip("dlib", reason="the face crops and landmark attributes need dlib")
pytestmark = [
    pytest.mark.filterwarnings("ignore:FOMMCoarseGenerator. RANDOM WEIGHTS"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]
if not (FIXTURES / "driving.mp4").is_file():
    pytest.skip(f"shared fixtures not found at {FIXTURES}", allow_module_level=True)

SEED = 0
SAMPLE = 10  # cases of the default suite (about 5 s each)
MAX_FRAMES = 3
COMMANDS = ("animate portrait", "animate driving", "rectify", "preprocess", "app")


@dataclass
class Outcome:
    command: str
    ok: bool  # an output, or an expected one-line error naming the file
    kind: str  # "output" | "error" | "FAIL"
    text: str


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    """Files under ``folder`` that a failed run must not leave (everything but ``keep``)."""
    if not folder.exists():
        return []
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and str(p.relative_to(folder)) not in keep
    )


class Runner:
    """The commands' functions over one tiny refiner, a good portrait and a good clip."""

    def __init__(self, ckpt: Path, workdir: Path) -> None:
        from fadm_lightning.faces.detection import FaceFinder
        from fadm_lightning.inference.animate import AnimateOptions
        from fadm_lightning.inference.jobs import AppSettings, WebApp, Workspace
        from fadm_lightning.inference.model import SamplerSettings, load_refiner
        from fadm_lightning.inference.rectify import RectifyOptions

        self.workdir = workdir
        self.refiner = load_refiner(ckpt, device="cpu")
        self.finder = FaceFinder()
        self.sampler = SamplerSettings(steps=1, eta=1.0, strength=1.0, batch_size=MAX_FRAMES)
        self.animate_options = AnimateOptions(progress=False, max_frames=MAX_FRAMES)
        self.rectify_options = RectifyOptions(progress=False, max_frames=MAX_FRAMES)
        good = workdir / "good"
        good.mkdir(exist_ok=True)
        self.portrait = good / "portrait.png"
        shutil.copy(FIXTURES / "source.png", self.portrait)
        frames = np.stack(list(iter_frames(FIXTURES / "driving.mp4", max_frames=MAX_FRAMES)))
        self.clip = write_video(good / "clip.mp4", frames, 25, audio="aac")
        self.workspace = Workspace(workdir)
        settings = AppSettings(preview_frames=MAX_FRAMES, max_seconds=1e6, max_queue=1)
        self.web = WebApp(
            self.refiner,
            self.sampler,
            self.animate_options,
            self.rectify_options,
            settings,
            self.workspace,
            log=self._app_log,
        )
        self.app_log: list[str] = []

    def _app_log(self, message: str) -> None:
        self.app_log.append(message)

    def close(self) -> None:
        self.web.close()
        self.workspace.remove()

    # ------------------------------------------------------------------ one command
    def _judge_error(self, command: str, err: BaseException, case_file: Path) -> Outcome:
        from fadm_lightning.inference import cli

        message = str(err)
        if not isinstance(err, cli.EXPECTED_ERRORS):
            return Outcome(command, False, "FAIL", f"unexpected {type(err).__name__}: {message}")
        if "\n" in message.strip():
            return Outcome(command, False, "FAIL", f"multi-line message: {message!r}")
        if case_file.name not in message:
            return Outcome(command, False, "FAIL", f"message does not name the file: {message}")
        return Outcome(command, True, "error", message)

    def _judge_output(self, command: str, output: Path, report: dict) -> Outcome:
        try:
            info = probe_video(output)
        except Exception as err:  # the output must be readable
            return Outcome(command, False, "FAIL", f"unreadable output: {err}")
        return Outcome(
            command,
            True,
            "output",
            f"{report['frames']} frame{'s' if report['frames'] != 1 else ''} "
            f"{info.width}×{info.height} at {report['fps']:g} fps",
        )

    def _inference(self, command: str, case_file: Path, out_dir: Path, call) -> Outcome:
        out_dir.mkdir(parents=True, exist_ok=True)
        output = out_dir / "out.mp4"
        inputs_before = sorted(p.name for p in case_file.parent.iterdir())
        try:
            report = call(output)
        except Exception as err:
            outcome = self._judge_error(command, err, case_file)
            left = _leftovers(out_dir)
            if left:
                outcome = Outcome(command, False, "FAIL", f"left {left} after: {outcome.text}")
        else:
            outcome = self._judge_output(command, output, report)
        inputs_after = sorted(p.name for p in case_file.parent.iterdir())
        if inputs_after != inputs_before:
            outcome = Outcome(command, False, "FAIL", f"files beside the input: {inputs_after}")
        shutil.rmtree(out_dir, ignore_errors=True)
        return outcome

    def animate(self, case_file: Path, out_dir: Path, as_portrait: bool) -> Outcome:
        from fadm_lightning.inference.animate import animate_video

        source, driving = (case_file, self.clip) if as_portrait else (self.portrait, case_file)
        command = "animate portrait" if as_portrait else "animate driving"
        return self._inference(
            command,
            case_file,
            out_dir,
            lambda output: animate_video(
                self.refiner,
                source,
                driving,
                output,
                self.sampler,
                self.animate_options,
                self.finder,
                log=lambda m: None,
            ),
        )

    def rectify(self, case_file: Path, out_dir: Path) -> Outcome:
        from fadm_lightning.inference.rectify import rectify_video

        return self._inference(
            "rectify",
            case_file,
            out_dir,
            lambda output: rectify_video(
                self.refiner,
                case_file,
                output,
                self.sampler,
                self.rectify_options,
                self.finder,
                log=lambda m: None,
            ),
        )

    def preprocess(self, case_file: Path, out_dir: Path) -> Outcome:
        from fadm_lightning.data.preprocessing import CropSettings, preprocess

        settings = CropSettings(min_frames=1, min_size=64, image_size=64, gop=None)
        command = "preprocess"
        try:
            summary = preprocess(
                case_file.parent, out_dir, num_workers=1, progress=False, settings=settings
            )
        except Exception as err:  # the run itself must not fail on one input
            shutil.rmtree(out_dir, ignore_errors=True)
            return Outcome(command, False, "FAIL", f"the run failed: {type(err).__name__}: {err}")
        try:
            if not summary["files"]:  # a suffix preprocess does not take: not an input
                left = _leftovers(out_dir)
                stray = [
                    p for p in left if not (p.startswith(".preprocess/") or p.endswith(".json"))
                ]
                if stray:
                    return Outcome(command, False, "FAIL", f"files left: {stray}")
                return Outcome(command, True, "ignored", f"not an input ({case_file.suffix})")
            (record,) = summary["files"]
            written = [*summary["clips"], *summary["portrait_files"]]
            bookkeeping = {
                p
                for p in _leftovers(out_dir)
                if p.startswith(".preprocess/") or p.endswith(".json")
            }
            stray = [
                p
                for p in _leftovers(out_dir, bookkeeping)
                if not any(p == w or p.startswith(f"{w}/") for w in written)
            ]
            if stray:
                return Outcome(command, False, "FAIL", f"files left: {stray}")
            if any(".tmp" in p for p in bookkeeping):
                return Outcome(command, False, "FAIL", f"temporary files left: {bookkeeping}")
            if record["status"] == "broken":
                message = record["error"]
                if case_file.name not in message or "\n" in message.strip():
                    return Outcome(command, False, "FAIL", f"unclear error: {message}")
                if written:
                    return Outcome(command, False, "FAIL", f"broken but wrote {written}")
                return Outcome(command, True, "error", message)
            if record["kind"] == "video":
                kept = sum(1 for t in record["tubes"] if t.get("clip"))
                dropped = Counter(t["reason"] for t in record["tubes"] if t["reason"])
                text = f"video, {record['frames']} frames: {kept} clip(s)"
                if dropped:
                    text += f", dropped {dict(dropped)}"
                elif not record["tubes"]:
                    text += " (no face)"
            else:
                text = f"image: {'portrait' if record.get('output') else record.get('reason')}"
            if record.get("warning"):
                text += f" (warning: {record['warning']})"
            for clip in written:
                probe_video(out_dir / clip) if clip.endswith(".mp4") else None
            return Outcome(command, True, "output", text)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

    def app(self, case: Case, case_file: Path) -> Outcome:
        from fadm_lightning.inference.jobs import JobError

        command = "app"
        self.app_log.clear()
        try:
            if case.role == "image":
                report = self.web.animate(str(case_file), str(self.clip), max_frames=MAX_FRAMES)
            else:
                report = self.web.rectify(str(case_file), max_frames=MAX_FRAMES)
        except JobError as err:
            message = str(err)
            if message.startswith("the job failed") or any("Traceback" in m for m in self.app_log):
                outcome = Outcome(command, False, "FAIL", f"unexpected: {message}")
            elif case_file.name not in message or "\n" in message.strip():
                outcome = Outcome(command, False, "FAIL", f"unclear error: {message}")
            else:
                outcome = Outcome(command, True, "error", message)
        except Exception as err:
            outcome = Outcome(
                command, False, "FAIL", f"not a JobError: {type(err).__name__}: {err}"
            )
        else:
            outcome = self._judge_output(command, Path(report["output"]), report)
        jobs = list(self.workspace.jobs.iterdir())
        if outcome.kind != "output" and jobs:
            outcome = Outcome(command, False, "FAIL", f"job folder left: {jobs}")
        for job in jobs:
            shutil.rmtree(job, ignore_errors=True)
        return outcome

    # ------------------------------------------------------------------ one case
    def run(self, fuzz: FuzzMedia, case: Case) -> dict[str, Outcome]:
        case_file = fuzz.make(case)
        scratch = self.workdir / "runs" / case.name
        outcomes = {
            "animate portrait": self.animate(case_file, scratch / "portrait", True),
            "animate driving": self.animate(case_file, scratch / "driving", False),
            "rectify": self.rectify(case_file, scratch / "rectify"),
            "preprocess": self.preprocess(case_file, scratch / "preprocess"),
            "app": self.app(case, case_file),
        }
        shutil.rmtree(scratch, ignore_errors=True)
        return outcomes


def _check(results: dict[str, dict[str, Outcome]]) -> None:
    failures = [
        f"{name} / {o.command}: {_one_line(o.text, 300)}"
        for name, outcomes in results.items()
        for o in outcomes.values()
        if not o.ok
    ]
    assert not failures, f"{len(failures)} bad outcome(s):\n" + "\n".join(failures)


# ------------------------------------------------------------------------------ the table
def _excerpt(outcome: Outcome, case_file_name: str) -> str:
    if outcome.kind == "output":
        return f"✅ {outcome.text}"
    if outcome.kind == "ignored":
        return f"➖ {outcome.text}"
    text = outcome.text
    # the message without the file's path (the table's row names the file)
    for prefix in (f"{case_file_name}:",):
        at = text.find(prefix)
        if at >= 0:
            text = text[at + len(prefix) :]
    # and where a library repeats the path, the name alone
    text = re.sub(r"[^\s'\"]*" + re.escape(case_file_name), case_file_name, text)
    text = text.replace("|", "\\|")
    mark = "❌ FAIL:" if outcome.kind == "FAIL" else "⛔"
    return f"{mark} {_one_line(text, 110)}"


def write_table(
    path: Path, fuzz: FuzzMedia, results: dict[str, dict[str, Outcome]], seconds: float
) -> None:
    counts = {c: Counter(results[n][c].kind for n in results) for c in COMMANDS}
    lines = [
        "# Fuzzed media: what each command does with each input",
        "",
        "Generated by `make test-fuzz FUZZ_TABLE=docs/fuzz_table.md` (issue 25; "
        f"`tests/fuzz_media.py`, seed {fuzz.seed}, {len(results)} cases, "
        f"{seconds:.0f} s on the machine that ran it). Each input file goes through: "
        "**animate portrait** (`animate` with the file as `source`, a good driving clip), "
        "**animate driving** (a good portrait, the file as `driving`), **rectify** "
        "(`video=` the file), **preprocess** (a folder holding only the file) and **app** "
        "(the web app's job: `WebApp.animate` with the file as the portrait when it was made "
        f"as an image, `WebApp.rectify` when made as a video), with `max_frames={MAX_FRAMES}` "
        "and the tiny test checkpoint.",
        "",
        "✅ an output (the mp4's frames, or what preprocessing recorded for the file); ⛔ an "
        "error, printed by the commands as one line `animate: error: <file>: <problem>` "
        "(exit status 1), the excerpt here without the file's path; ➖ not an input of "
        "preprocess (a suffix it does not list); ❌ a failure of the "
        "contract (a traceback, a message that does not name the file, a file left behind). "
        "Every run is also checked to leave no file behind.",
        "",
        "| command | outputs | errors | ignored | failures |",
        "|---|---|---|---|---|",
    ]
    for command in COMMANDS:
        c = counts[command]
        lines.append(f"| {command} | {c['output']} | {c['error']} | {c['ignored']} | {c['FAIL']} |")
    by_category: dict[str, list[Case]] = {}
    for case in fuzz.cases:
        if case.name in results:
            by_category.setdefault(case.category, []).append(case)
    for category, cases in by_category.items():
        lines += [
            "",
            f"## {category}",
            "",
            "| case | what | " + " | ".join(COMMANDS) + " |",
            "|---|---|" + "---|" * len(COMMANDS),
        ]
        for case in cases:
            cells = [_excerpt(results[case.name][c], case.file_name) for c in COMMANDS]
            note = case.note.replace("|", "\\|")
            lines.append(f"| `{case.file_name}` | {note} | " + " | ".join(cells) + " |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def fuzz(workdir) -> FuzzMedia:
    return FuzzMedia(workdir / "cases", seed=SEED)


@pytest.fixture(scope="module")
def runner(workdir):
    ckpt = save_checkpoint(workdir / "tiny.ckpt", TINY_256)
    running = Runner(ckpt, workdir)
    yield running
    running.close()


# ------------------------------------------------------------------------------ tests
def test_the_generator_makes_200_cases_deterministically(tmp_path):
    one, two = FuzzMedia(tmp_path / "a", seed=3), FuzzMedia(tmp_path / "b", seed=3)
    assert len(one.cases) >= 200
    assert [c.name for c in one.cases] == [c.name for c in two.cases]
    categories = Counter(c.category for c in one.cases)
    assert {"truncated", "zero bytes", "wrong extension", "decompression bombs", "faces"} <= set(
        categories
    )
    for name in ("png_face__cut_r3", "mp4_h264_aac__corrupt_1", "jpeg_face__junk_before"):
        a, b = one.make(one.by_name[name]), two.make(two.by_name[name])
        assert a.read_bytes() == b.read_bytes()
    other = FuzzMedia(tmp_path / "c", seed=4)
    case = other.by_name["png_face__cut_r3"]
    assert other.make(case).read_bytes() != one.make(one.by_name["png_face__cut_r3"]).read_bytes()


BOMB_PROBE = """
import re, sys
from fadm_lightning.media.errors import VideoReadError
from fadm_lightning.media.image import read_image
from fadm_lightning.media.video import iter_frames, probe_video
for path in sys.argv[1:]:
    for read in (read_image, probe_video, lambda p: list(iter_frames(p))):
        try:
            read(path)
            print("READ", path)
        except VideoReadError as err:  # ImageReadError is one
            print("ERR", err)
# this process's peak (VmHWM: ru_maxrss would report the pytest parent's peak, kept over exec)
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
print("MAXRSS_MB", peak_kb / 1024)
"""


def test_bombs_are_refused_from_the_header_in_bounded_memory(fuzz):
    """In a fresh process, so that its peak memory is the readers' own: every reader refuses
    every bomb (images and video headers) before decoding, well under the decoded sizes."""
    bombs = [fuzz.make(c) for c in fuzz.cases if c.category == "decompression bombs"]
    assert len(bombs) >= 5
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)}
    proc = subprocess.run(
        [sys.executable, "-c", BOMB_PROBE, *map(str, bombs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert not [line for line in lines if line.startswith("READ")], proc.stdout
    assert sum(line.startswith("ERR") for line in lines) == 3 * len(bombs)
    refused = (
        "megapixels",
        "too large to decode",
        "cannot open",
        "unreadable image",
        "not an image",
    )
    assert all(any(r in line for r in refused) for line in lines[:-1]), proc.stdout
    peak = float(lines[-1].split()[1])
    assert peak < 250, f"peak memory {peak:.0f} MB reading the bombs"  # one decoded: ≥ 432 MB


def test_a_sample_of_fuzzed_media_gives_outputs_or_one_line_errors(runner, fuzz):
    cases = fuzz.sample(SAMPLE)
    assert len({c.category for c in cases}) >= 10
    results = {case.name: runner.run(fuzz, case) for case in cases}
    _check(results)


@pytest.mark.slow
def test_every_fuzzed_input_gives_an_output_or_a_one_line_error(runner, fuzz):
    began = time.perf_counter()
    results = {}
    only = [n for n in os.environ.get("FADM_FUZZ_CASES", "").split(",") if n]  # to reproduce one
    for case in [fuzz.by_name[n] for n in only] if only else fuzz.cases:
        print(f"fuzz case {case.name}", file=sys.stderr, flush=True)  # names a crash's case
        results[case.name] = runner.run(fuzz, case)
        shutil.rmtree(fuzz.folder / case.name, ignore_errors=True)
    table = os.environ.get("FADM_FUZZ_TABLE")
    if table and not only:
        write_table(Path(table), fuzz, results, time.perf_counter() - began)
    dump = {n: {c: o.__dict__ for c, o in r.items()} for n, r in results.items()}
    (runner.workdir / "fuzz_results.json").write_text(json.dumps(dump, indent=1))
    _check(results)
