"""The BlazePose teacher's process: runs in the teacher's virtual environment, started by ``engine.teacher``.

Usage: ``PYTHON -I _blazepose_child.py --kind heavy|full [--threads N] [--params JSON]``. It imports numpy,
``ai_edge_litert`` and its sibling ``blazepose.py`` (loaded by path; numpy only), never posestream: the
teacher's environment has no posestream and its own versions of everything.

Protocol (stdin -> stdout, one round trip per request): a request is one JSON line, then ``nbytes`` raw bytes;
an answer likewise. Requests: ``{"op": "label", "shape": [H, W], "proposals": [[x0, y0, x1, y1], ...],
"nbytes": H*W*3}`` + the BGR uint8 frame; ``{"op": "reset"}`` (forget tracks); ``{"op": "quit"}``. Answers:
``{"ok": true, "arrays": [[name, dtype, shape], ...], "stats": {...}, "nbytes": n}`` + the arrays' bytes in
that order, or ``{"ok": false, "error": "..."}``. On start it answers ``{"ok": true, "ready": ...}`` once.

Arrays of a label answer (N people, M ignore regions): ``xy`` [N,33,2], ``visibility`` and ``presence``
[N,33], ``world`` [N,33,3] metres (hip-centred, the frame's orientation), ``flag`` [N] person presence,
``region`` [N,4] the region each was labelled in, ``source`` [N] (0 track, 1 detector, 2 proposal),
``ignore`` [M,4] boxes (x0, y0, x1, y1) where a proposal had no labellable person; float32 (source int32).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SOURCES = {"track": 0, "detector": 1, "proposal": 2}


def _load_blazepose():
    spec = importlib.util.spec_from_file_location("_teacher_blazepose", Path(__file__).with_name("blazepose.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bp = _load_blazepose()


def model_dir() -> Path:
    """The mediapipe wheel's ``modules`` folder (found without importing mediapipe)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no mediapipe package in this environment (posestream teacher setup installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "modules"


class Model:
    """One ``.tflite`` file under LiteRT; outputs named by their shapes (``names``: shape -> name)."""

    def __init__(self, path: Path, threads: int, names: dict[tuple[int, ...], str]):
        from ai_edge_litert.interpreter import Interpreter

        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing")
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.outputs = {names[tuple(d["shape"][1:])]: d["index"] for d in self.interpreter.get_output_details()
                        if tuple(d["shape"][1:]) in names}

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(x[None], np.float32))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(i)[0] for name, i in self.outputs.items()}


def load_models(kind: str, threads: int) -> tuple[Model, Model]:
    base = model_dir()
    detector = Model(base / "pose_detection" / "pose_detection.tflite", threads,
                     {(2254, 12): "raw", (2254, 1): "logits"})
    landmarks = Model(base / "pose_landmark" / f"pose_landmark_{kind}.tflite", threads,
                      {(195,): "landmarks", (1,): "presence", (64, 64, 39): "heatmap", (117,): "world"})
    return detector, landmarks


class Search:
    """Every person of a frame: regions from last frame's people, the detector on tiles and the caller's boxes,
    the landmark model on each new region, duplicates merged, rejected regions turned into ignore boxes."""

    def __init__(self, detector, landmarks, params):
        self.detector, self.landmarks, self.params = detector, landmarks, params
        self.anchors = bp.ssd_anchors()
        self.reset()

    def reset(self) -> None:
        self.tracks, self.frames = np.zeros((0, 4)), 0

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detector regions [D, 4] and scores [D] over the tiles of ``params.tiles``, merged across all."""
        p, (h, w) = self.params, frame.shape[:2]
        points, scores = [np.zeros((0, 4, 2))], [np.zeros(0)]
        for across in p.tiles:
            for tile in bp.tile_regions((w, h), across, p.tile_overlap):
                out = self.detector(bp.crop(frame, tile, bp.DETECTOR_SIZE, replicate=False) * 2.0 - 1.0)
                _, k, s = bp.decode_detections(out["raw"], out["logits"], self.anchors, p.min_detection)
                points.append(bp.to_frame(k, tile))
                scores.append(s)
        k, s = bp.merge_detections(np.concatenate(points), np.concatenate(scores), p.merge_distance)
        return bp.alignment_regions(k[:, 0], k[:, 1]).reshape(-1, 4), s

    def look(self, frame: np.ndarray, region: np.ndarray) -> dict:
        """The landmark model on ``region``, decoded (``flag``: its person presence)."""
        return bp.decode_landmarks(self.landmarks(bp.crop(frame, region, bp.LANDMARK_SIZE, replicate=True)), region)

    def examine(self, frame: np.ndarray, region: np.ndarray, budget: int) -> tuple[dict, np.ndarray, int]:
        """(result, the region it came from, looks taken): one look, and with ``refine`` a second one at the region
        the first one's landmarks give, kept when it still finds the person."""
        first = self.look(frame, region)
        if first["flag"] < self.params.min_presence or not self.params.refine or budget < 2:
            return first, region, 1
        better = bp.next_region(first["xy"])
        if bp.same_region(region, better, centre=0.1, size=1.15):
            return first, region, 1
        second = self.look(frame, better)
        return (second, better, 2) if second["flag"] >= self.params.min_presence else (first, region, 2)

    def candidates(self, frame: np.ndarray, proposals: np.ndarray) -> tuple[list, int]:
        """(region, source) pairs, most trusted first, and the number of detections."""
        found = [(r, "track", 3.0) for r in self.tracks]
        detections, t0 = 0, time.perf_counter()
        if self.frames % self.params.detect_every == 0:
            regions, scores = self.detect(frame)
            detections = len(scores)
            found += [(r, "detector", 1.0 + s) for r, s in zip(regions, scores)]
        found += [(r, "proposal", 0.5) for r in bp.box_regions(proposals, self.params.box_scale)]
        found.sort(key=lambda c: -c[2])
        self.detect_seconds = time.perf_counter() - t0
        return [(r, src) for r, src, _ in found], detections

    def run(self, frame: np.ndarray, proposals: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        p, t0 = self.params, time.perf_counter()
        candidates, detections = self.candidates(frame, proposals)
        people, rejected, tried, crops = [], [], [], 0
        for candidate, source in candidates:
            if crops >= p.max_crops or any(bp.same_region(candidate, t, p.same_person) for t in tried):
                continue
            tried.append(candidate)
            person, region, looks = self.examine(frame, candidate, p.max_crops - crops)
            crops += looks
            tilted = person["flag"] >= p.min_presence and _tilted(person["xy"], p.max_tilt)
            if person["flag"] < p.min_presence or tilted:
                # ignored: somebody lying down, a person of last frame, a detection the landmark model doubts, a
                # caller's box with ignore_proposals; a detection it is sure is nobody is a true negative
                if source == "proposal":
                    unsure = p.ignore_proposals
                else:
                    unsure = tilted or source == "track" or person["flag"] >= p.ignore_presence
                if unsure:
                    rejected.append(candidate)
                continue
            person.update(region=region, source=SOURCES[source], candidate=candidate)
            people.append(person)
            tried.append(bp.next_region(person["xy"]))
        people, dropped = _resolve(people)
        rejected += [q["candidate"] for q in dropped]
        self.tracks = np.array([bp.next_region(q["xy"]) for q in people]).reshape(-1, 4)
        self.frames += 1
        stats = {"detections": detections, "candidates": len(candidates), "crops": crops,
                 "detect_s": round(self.detect_seconds, 4), "seconds": round(time.perf_counter() - t0, 4)}
        return _pack(people, _ignore(rejected, people)), stats


def _tilted(xy: np.ndarray, max_tilt: float | None) -> bool:
    if max_tilt is None:
        return False
    axis = (xy[11] + xy[12]) / 2 - (xy[23] + xy[24]) / 2          # hips -> shoulders
    return bool(np.degrees(np.arctan2(abs(axis[0]), -axis[1])) > max_tilt)


def _box(q: dict) -> np.ndarray:
    return np.concatenate([q["xy"][:33].min(0), q["xy"][:33].max(0)])


def _clash(big: dict, small: dict) -> bool:
    """Whether ``big`` (the result in the larger region) claims ``small``'s person: a quarter of their body
    landmarks within 5% of the smaller region's side of each other, half within 10%, or ``small``'s body lying
    mostly (60%) inside ``big``'s while ``big``'s region is 1.3 times larger (a skeleton spread over two people)."""
    near = np.hypot(*(big["xy"][:33] - small["xy"][:33]).T) / small["region"][2]
    if (near <= 0.05).mean() >= 0.25 or np.median(near) <= 0.1:
        return True
    a, b = _box(big), _box(small)
    inside = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return bool(big["region"][2] >= 1.3 * small["region"][2] and inside >= 0.6 * np.prod(b[2:] - b[:2]))


def _resolve(people: list[dict]) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): of results that clash, the one in the smaller region stays. A second look at somebody
    is dropped; so is a chimera, the landmark model's one skeleton over two people who share a region (a head of
    the one, the feet of the other, in a region larger than either's)."""
    kept, dropped = [], []
    for q in sorted(people, key=lambda q: (q["region"][2], -q["flag"])):
        (dropped if any(_clash(q, k) for k in kept) else kept).append(q)
    return kept, dropped


def _ignore(rejected: list[np.ndarray], people: list[dict]) -> np.ndarray:
    """Person-shaped boxes [M, 4] of rejected regions (their square less the regions' margin, half as wide as
    tall), less those that looked at a labelled person: centred inside its joints' box (grown by a quarter each
    side), or half covered by it."""
    if not rejected:
        return np.zeros((0, 4))
    boxes = bp.region_boxes(np.array(rejected), shrink=bp.REGION_SCALE, aspect=0.5)
    if people:
        body = np.array([_box(q) for q in people])
        lo = np.maximum(boxes[:, None, :2], body[None, :, :2])
        hi = np.minimum(boxes[:, None, 2:], body[None, :, 2:])
        covered = np.clip(hi - lo, 0, None).prod(-1) / np.maximum((boxes[:, 2:] - boxes[:, :2]).prod(-1), 1e-9)[:, None]
        centre = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
        grow = (body[None, :, 2:] - body[None, :, :2]) * 0.25
        inside = ((centre >= body[None, :, :2] - grow) & (centre <= body[None, :, 2:] + grow)).all(-1)
        boxes = boxes[(covered.max(1) < 0.5) & ~inside.any(1)]
    return boxes


def _pack(people: list[dict], ignore: np.ndarray) -> dict[str, np.ndarray]:
    n = len(people)

    def stack(key: str, shape: tuple[int, ...], sl=slice(None)) -> np.ndarray:
        return np.array([q[key][sl] for q in people], np.float32).reshape((n,) + shape)

    return {"xy": stack("xy", (33, 2), slice(0, 33)), "visibility": stack("visibility", (33,), slice(0, 33)),
            "presence": stack("presence", (33,), slice(0, 33)), "world": stack("world", (33, 3)),
            "flag": np.array([q["flag"] for q in people], np.float32), "region": stack("region", (4,)),
            "source": np.array([q["source"] for q in people], np.int32),
            "ignore": np.asarray(ignore, np.float32).reshape(-1, 4)}


def _send(out, header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    blobs = [np.ascontiguousarray(a) for a in (arrays or {}).values()]
    header = dict(header, arrays=[[k, a.dtype.str, list(a.shape)] for k, a in zip(arrays or {}, blobs)],
                  nbytes=sum(a.nbytes for a in blobs))
    out.write(json.dumps(header).encode() + b"\n")
    for a in blobs:
        out.write(a.tobytes())
    out.flush()


def serve(search: Search, inp, out) -> None:
    while True:
        line = inp.readline()
        if not line:
            return
        request = json.loads(line)
        payload = inp.read(request.get("nbytes", 0))
        op = request.get("op")
        if op == "quit":
            return
        if op == "reset":
            search.reset()
            _send(out, {"ok": True})
        elif op == "label":
            h, w = request["shape"]
            if len(payload) != h * w * 3:
                _send(out, {"ok": False, "error": f"frame: expected {h * w * 3} bytes, got {len(payload)}"})
                continue
            frame = np.frombuffer(payload, np.uint8).reshape(h, w, 3)
            proposals = np.asarray(request.get("proposals") or [], np.float64).reshape(-1, 4)
            arrays, stats = search.run(frame, proposals)
            _send(out, {"ok": True, "stats": stats}, arrays)
        else:
            _send(out, {"ok": False, "error": f"unknown op {op!r}"})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_blazepose_child.py")
    parser.add_argument("--kind", choices=("heavy", "full"), required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--params", default="{}", help="SearchParams fields as JSON")
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(1), "wb")       # the protocol's channel; anything else printed (LiteRT's logs included)
    os.dup2(2, 1)                          # goes to stderr
    sys.stdout = sys.stderr
    try:
        fields = json.loads(args.params)
        params = bp.SearchParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        detector, landmarks = load_models(args.kind, args.threads)
    except Exception as err:  # any failure to start is reported to the parent, which names it
        _send(out, {"ok": False, "error": f"{type(err).__name__}: {err}"})
        return 2
    import ai_edge_litert

    _send(out, {"ok": True, "ready": True, "kind": args.kind,
                "litert": getattr(ai_edge_litert, "__version__", "unknown")})
    serve(Search(detector, landmarks, params), sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
