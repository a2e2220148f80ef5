import json
from fractions import Fraction

import av
import numpy as np

from engine.results import Poses
from models.layouts import COCO17, MPII16
from stream.posefile import PoseRecord
from stream.render import VideoWriter, coco_results, draw_poses


def _person(layout, scale=1.0, score=0.9, track=-1):
    k = layout.num_joints
    xy = np.stack([np.linspace(10, 80, k), np.linspace(8, 56, k)], axis=1)[None].astype(np.float32)
    return Poses(layout.name, xy, np.full((1, k), score, np.float32), np.array([0.8], np.float32),
                 np.array([track], np.int64))


def test_draw_poses_draws_along_the_bones_and_faint_for_low_scores():
    strong = draw_poses(np.zeros((64, 96, 3), np.uint8), _person(MPII16, score=0.9))
    faint = draw_poses(np.zeros((64, 96, 3), np.uint8), _person(MPII16, score=0.1))
    assert strong.max() > 0 and faint.max() > 0
    assert faint.sum() < 0.45 * strong.sum(), "low-score joints are drawn faint (35% opacity)"
    (a, b), color = MPII16.bones[0], MPII16.bone_colors[0]
    one_bone = _person(MPII16)
    one_bone.score[:] = 0
    one_bone.score[0, [a, b]] = 0.9
    one_bone.xy[0, a], one_bone.xy[0, b] = (10, 10), (80, 50)
    image = draw_poses(np.zeros((64, 96, 3), np.uint8), one_bone)
    assert np.abs(image[30, 45].astype(int) - color).max() <= 16, "the bone's own colour halfway along it"
    assert image[5:, :5].max() == 0 and image[55:, 85:].max() == 0, "nothing drawn beyond the bone's ends"


def test_small_people_get_thinner_bones_and_smaller_joint_dots():
    def ink_per_px(scale):  # drawn pixels per pixel of the person's size: about the pen's width
        person = _person(COCO17)
        person.xy[0] = 100 + (person.xy[0] - person.xy[0].min(0)) * scale
        image = draw_poses(np.zeros((480, 640, 3), np.uint8), person)
        return (image.max(-1) > 0).sum() / scale

    small, big = ink_per_px(0.8), ink_per_px(4.0)  # people 56 and 280 px across on a 640x480 frame
    assert small < 0.8 * big, (small, big)  # fixed pens: the small one has more (1.4x)


def test_track_ids_change_the_colour():
    one = draw_poses(np.zeros((64, 96, 3), np.uint8), _person(MPII16, track=0))
    two = draw_poses(np.zeros((64, 96, 3), np.uint8), _person(MPII16, track=1))
    assert not np.array_equal(one, two)


def test_video_writer_keeps_frame_count_rate_and_timestamps(tmp_path):
    path = str(tmp_path / "o.mp4")
    writer = VideoWriter(path, 95, 63, rate=(30000, 1001), time_base=(1, 30000))
    pts = [i * 1001 for i in range(9)]
    for p in pts:
        writer.write(np.full((63, 95, 3), 100, np.uint8), p)
    writer.close()
    with av.open(path) as container:
        stream = container.streams.video[0]
        got = [f.pts * f.time_base for f in container.decode(stream)]
        assert stream.average_rate == Fraction(30000, 1001) and (stream.width, stream.height) == (96, 64)
    assert got == [Fraction(p, 30000) for p in pts]


def test_coco_results_convert_to_coco_joints():
    record = PoseRecord(stream="s", frame=5, layout="mpii16", poses=_person(MPII16))
    out = coco_results(record)
    assert len(out) == 1 and out[0]["image_id"] == 5 and len(out[0]["keypoints"]) == 17 * 3
    json.dumps(out)
    nose_score = out[0]["keypoints"][2]
    assert nose_score == 0, "MPII has no nose: score 0"
    same = coco_results(PoseRecord(stream="s", frame=1, layout="coco17", poses=_person(COCO17)))
    assert same[0]["keypoints"][:2] == np.round(_person(COCO17).xy[0, 0], 2).tolist()


def test_renderer_creates_its_ready_file_once_the_engine_took_its_claim(tmp_path, ipc):
    import threading

    from stream.render import RenderConfig, Renderer
    from stream.serve import EngineServer, ServeConfig
    from stream.transport import Policy
    from tests.stream.conftest import small_engine, wait_for

    fast = Policy(heartbeat_s=0.1, peer_timeout_s=1.0)
    ready = tmp_path / "ready"
    renderer = Renderer(RenderConfig(ipc["deliver"], ready_file=str(ready), stream="cam", policy=fast))
    stop, stop_server = threading.Event(), threading.Event()
    rendering = threading.Thread(target=renderer.run, args=(stop,), daemon=True)
    rendering.start()
    server = EngineServer(small_engine(), ServeConfig(ipc["frames"], deliver=ipc["deliver"], policy=fast))
    serving = threading.Thread(target=server.run, args=(stop_server,), daemon=True)
    try:
        assert not ready.exists(), "nothing is bound at the endpoint yet"
        serving.start()
        wait_for(ready.exists, 20, "the ready file after the engine bound")
        assert server.assigned["cam"].instance == renderer.instance, "the engine registered the claim first"
    finally:
        stop.set()
        rendering.join(10)
        stop_server.set()
        serving.join(10)
    assert not rendering.is_alive()
