"""What ``posestream view`` logs to Rerun (rerun-sdk), where it goes, and how it reaches a viewer.

Entity layout, one subtree per stream S. 3D is the engine's camera space: x right, y down, z forward, in
millimetres. 2D is Rerun's image space, whose pixel centres sit at +0.5 (posestream's at 0, see
models/layouts.py), so 2D points and the principal point are shifted by half a pixel; 3D points are not.

    /S                   the stream's 3D space (right-down-forward camera coordinates)
    /S/camera            Pinhole from the stream's intrinsics and frame size: the camera frustum in 3D
    /S/camera/image      the frame, when the stream carries frames (``serve --publish-frames``)
    /S/camera/joints     Points2D [N*K] person-major; colour per person (by track id), joint names on hover
    /S/camera/bones      LineStrips2D, [N*B] (one strip per bone and person)
    /S/camera/people     Boxes2D [N], labelled with the person's id
    /S/joints            Points3D [N*K] person-major: the pose file's ``keypoints_3d``
    /S/bones             LineStrips3D [N*B]
    /S/people            Points3D [N] above each head, labelled with the person's id
    /S/events            TextLog: the stream ended (and why), or restarted
    /metrics/latency_ms/S/publish   capture -> publish;   /metrics/latency_ms/S/view   capture -> logged here
    /metrics/fps/S                  publish rate;         /metrics/people/S            persons per frame

Every joint and bone is logged (so counts equal the pose file's); those under ``min_score`` get radius 0 (not
drawn) and those under ``faint_below`` a thinner line. Timelines: ``frame`` (the stream's seq) and
``capture_time``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from models.layouts import get_layout
from stream import wire
from stream.render import TRACK_COLORS
from stream.window import FpsMeter

PALETTE = np.array([c[::-1] for c in TRACK_COLORS], np.uint8)  # RGB
JOINT_RADIUS, BONE_RADIUS = 4.0, 2.5  # UI points
PLANE_MM = 1000.0                     # where the frustum draws the image plane


def viewer_binary() -> str | None:
    """The native Rerun Viewer that rerun-sdk ships (``rerun_cli``), else one on PATH."""
    try:
        import rerun_cli

        path = Path(rerun_cli.__file__).with_name("rerun")
        if path.is_file():
            return str(path)
    except ImportError:
        pass
    return shutil.which("rerun")


@dataclass
class _Stream:
    path: str                      # escaped entity path part
    layout: str
    has_3d: bool
    camera: tuple | None = None    # (width, height, intrinsics) last logged as the Pinhole
    last_seq: int = -1
    fps: FpsMeter = field(default_factory=FpsMeter)


class RerunLog:
    """Logs wire ``Poses`` (with their frame when there is one) and stream ends into ``rec``."""

    def __init__(self, rec: rr.RecordingStream, image_quality: int = 80, min_score: float = 0.05,
                 faint_below: float = 0.3):
        self.rec, self.quality, self.min_score, self.faint_below = rec, image_quality, min_score, faint_below
        self.streams: dict[str, _Stream] = {}

    # -- per stream ---------------------------------------------------------------------------------
    def _stream(self, msg: wire.Poses) -> _Stream:
        state = self.streams.get(msg.stream)
        if state is None or state.layout != msg.layout or state.has_3d != (msg.xyz is not None):
            layout = get_layout(msg.layout)
            state = self.streams[msg.stream] = _Stream(rr.escape_entity_path_part(msg.stream), msg.layout,
                                                       msg.xyz is not None)
            person = rr.ClassDescription(info=rr.AnnotationInfo(id=0, label="person"),
                                         keypoint_annotations=list(enumerate(layout.names)))
            self.rec.log(f"/{state.path}", rr.AnnotationContext([person]), static=True)
            self.rec.log(f"/{state.path}", rr.ViewCoordinates.RDF, static=True)
            self.rec.send_blueprint(self.blueprint())
        return state

    def blueprint(self) -> rrb.Blueprint:
        """One row per stream (its 2D view, and its 3D view for 3D models), and the metrics below."""
        rows = []
        for name, s in self.streams.items():
            views = [rrb.Spatial2DView(origin=f"/{s.path}/camera", name=f"{name}: 2D")]
            if s.has_3d:
                views.append(rrb.Spatial3DView(origin=f"/{s.path}", name=f"{name}: 3D (camera space, mm)"))
            rows.append(rrb.Horizontal(*views))
        metrics = rrb.Horizontal(rrb.TimeSeriesView(origin="/metrics/latency_ms", name="latency (ms)"),
                                 rrb.TimeSeriesView(origin="/metrics/fps", name="fps"),
                                 rrb.TimeSeriesView(origin="/metrics/people", name="people"))
        return rrb.Blueprint(rrb.Vertical(*rows, metrics, row_shares=[3] * len(rows) + [1]),
                             rrb.TimePanel(timeline="frame", state="collapsed"), collapse_panels=True)

    def _camera(self, s: _Stream, msg: wire.Poses) -> None:
        camera = (msg.width, msg.height, msg.intrinsics)
        if camera == s.camera or not (msg.width and msg.height):
            return
        s.camera = camera
        if msg.intrinsics is None:  # 2D-only model (or a 1.0 sender): a plain 2D space of the frame's size
            return
        fx, fy, cx, cy = msg.intrinsics
        self.rec.log(f"/{s.path}/camera", rr.Pinhole(
            focal_length=(fx, fy), principal_point=(cx + 0.5, cy + 0.5), width=msg.width, height=msg.height,
            camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=PLANE_MM))

    # -- logging ------------------------------------------------------------------------------------
    def poses(self, msg: wire.Poses, image: np.ndarray | None = None, received_ns: int | None = None) -> None:
        """Log one frame's people (``image``: its BGR pixels, when the stream carries frames)."""
        s = self._stream(msg)
        if msg.seq < s.last_seq:
            self.rec.log(f"/{s.path}/events", rr.TextLog(f"stream restarted at frame {msg.seq}", level="WARN"))
        s.last_seq = msg.seq
        self.rec.set_time("frame", sequence=msg.seq)
        self.rec.set_time("capture_time", timestamp=np.datetime64(msg.capture_ns, "ns"))
        self._camera(s, msg)
        if image is not None:
            self._image(s, image)
        poses = wire.unpack_poses(msg)
        self._people(s, poses, get_layout(msg.layout).bones)
        self._metrics(s, msg, len(poses), received_ns)

    def _image(self, s: _Stream, image: np.ndarray) -> None:
        if self.quality > 0:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if ok:
                self.rec.log(f"/{s.path}/camera/image", rr.EncodedImage(contents=data.tobytes(), media_type="image/jpeg"))
                return
        self.rec.log(f"/{s.path}/camera/image", rr.Image(image, color_model="BGR"))

    def _colors(self, track_id: np.ndarray) -> np.ndarray:
        """RGB [N, 3] per person: by track id, or by position in the frame when untracked (-1)."""
        keys = np.where(track_id >= 0, track_id, np.arange(len(track_id)))
        return PALETTE[keys % len(PALETTE)]

    def _radii(self, score: np.ndarray, full: float) -> np.ndarray:
        """UI-point radii: ``full``, thinner when faint, 0 (not drawn) below ``min_score`` or non-finite."""
        r = np.where(score >= self.faint_below, full, full * 0.6)
        return -np.where(score >= self.min_score, r, 0.0).astype(np.float32)  # negative = UI points in Rerun

    def _people(self, s: _Stream, poses, bones) -> None:
        n, k = poses.score.shape
        bones = np.asarray(bones, np.int64).reshape(-1, 2)
        color = self._colors(poses.track_id)
        ids = [f"id {t}" if t >= 0 else f"#{i}" for i, t in enumerate(poses.track_id)]
        joint_color, bone_color = np.repeat(color, k, axis=0), np.repeat(color, len(bones), axis=0)
        joint_radii = self._radii(poses.score.reshape(-1), JOINT_RADIUS)
        bone_radii = self._radii(poses.score[:, bones].min(axis=2).reshape(-1), BONE_RADIUS)
        keypoint_ids = np.tile(np.arange(k), n)
        xy = poses.xy + 0.5
        self.rec.log(f"/{s.path}/camera/joints", rr.Points2D(
            xy.reshape(-1, 2), colors=joint_color, radii=joint_radii, class_ids=0, keypoint_ids=keypoint_ids))
        self.rec.log(f"/{s.path}/camera/bones", rr.LineStrips2D(
            xy[:, bones].reshape(-1, 2, 2), colors=bone_color, radii=bone_radii))
        lo, hi = self._extent(poses.xy, poses.score)
        self.rec.log(f"/{s.path}/camera/people", rr.Boxes2D(mins=lo + 0.5, sizes=hi - lo, colors=color, labels=ids))
        if poses.xyz is None:
            return
        self.rec.log(f"/{s.path}/joints", rr.Points3D(
            poses.xyz.reshape(-1, 3), colors=joint_color, radii=joint_radii, class_ids=0, keypoint_ids=keypoint_ids))
        self.rec.log(f"/{s.path}/bones", rr.LineStrips3D(
            poses.xyz[:, bones].reshape(-1, 2, 3), colors=bone_color, radii=bone_radii))
        top = np.zeros((0, 3), np.float32)
        if n:  # a label 15 cm above each person's highest joint (y points down)
            top = poses.xyz[np.arange(n), np.argmin(poses.xyz[..., 1], axis=1)] - (0.0, 150.0, 0.0)
        self.rec.log(f"/{s.path}/people", rr.Points3D(top, colors=color, radii=0.0, labels=ids))

    def _extent(self, xy: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per person, the box [N, 2] min and max of its drawn joints (all joints when none is drawn)."""
        if not len(xy):
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        seen = (score >= self.min_score)[..., None] & np.isfinite(xy)
        seen |= ~seen.any(axis=1, keepdims=True)
        lo = np.where(seen, xy, np.inf).min(axis=1)
        hi = np.where(seen, xy, -np.inf).max(axis=1)
        return np.nan_to_num(lo), np.nan_to_num(hi)

    def _metrics(self, s: _Stream, msg: wire.Poses, people: int, received_ns: int | None) -> None:
        name = s.path
        self.rec.log(f"/metrics/latency_ms/{name}/publish", rr.Scalars((msg.publish_ns - msg.capture_ns) / 1e6))
        if received_ns is not None:
            self.rec.log(f"/metrics/latency_ms/{name}/view", rr.Scalars((received_ns - msg.capture_ns) / 1e6))
        fps = s.fps.tick(msg.publish_ns / 1e9)
        if fps is not None:
            self.rec.log(f"/metrics/fps/{name}", rr.Scalars(fps))
        self.rec.log(f"/metrics/people/{name}", rr.Scalars(float(people)))

    def end(self, msg: wire.EndOfStream) -> None:
        """A stream ended: a line in its event log (with why, when it ended early)."""
        s = self.streams.get(msg.stream)
        path = s.path if s else rr.escape_entity_path_part(msg.stream)
        text = f"stream ended after {msg.seq} frames" + (f": {msg.error}" if msg.error else "")
        self.rec.log(f"/{path}/events", rr.TextLog(text, level="WARN" if msg.error else "INFO"))


def open_recording(*, save: str | None = None, web: bool = False, web_port: int = 9090, grpc_port: int = 9876,
                   connect: str | None = None, memory_limit: str = "25%", open_browser: bool = True) -> rr.RecordingStream:
    """A recording whose data goes to a file (``save``), a web viewer served here (``web``), a running viewer
    (``connect``: its gRPC URL), or else a native viewer window started for it."""
    rec = rr.RecordingStream("posestream")
    if save:
        rec.save(save)
    elif web:
        url = rr.serve_grpc(grpc_port=grpc_port, recording=rec, server_memory_limit=memory_limit)
        rr.serve_web_viewer(web_port=web_port, open_browser=open_browser, connect_to=url)
        print(f"posestream view: web viewer on http://127.0.0.1:{web_port}/?url={url}", file=sys.stderr)
    elif connect:
        rec.connect_grpc(connect)
    else:
        binary = viewer_binary()
        if binary is None:
            raise RuntimeError("the Rerun Viewer (rerun-sdk's rerun binary) is not installed")
        rr.spawn(recording=rec, executable_path=binary, memory_limit=memory_limit)
    return rec
