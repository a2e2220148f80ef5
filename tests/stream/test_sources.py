import cv2
import numpy as np
import pytest

from stream.sources import ImageFolder, SourceError, VideoFile, open_source
from tests.stream.conftest import decoded_pts, make_video


def test_video_file_yields_every_frame_with_its_timestamps(tmp_path):
    pts = make_video(tmp_path / "a.mp4", 12)
    source = open_source(str(tmp_path / "a.mp4"))
    assert isinstance(source, VideoFile) and source.rate == (25, 1)
    frames = list(source.frames())
    assert [f.pts for f in frames] == pts and len(frames) == 12
    assert frames[0].image.shape == (64, 96, 3) and frames[0].image.dtype == np.uint8
    assert abs(int(frames[0].image[28, 8, 2]) - 250) < 30, "BGR order: the square is orange (R high)"
    assert source.error is None


def test_truncated_video_gives_every_decodable_frame_and_an_error_naming_it(tmp_path):
    path = tmp_path / "cut.mkv"
    make_video(path, 50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    decodable = decoded_pts(path)
    source = open_source(str(path))
    got = [f.pts for f in source.frames()]
    assert got == decodable and 0 < len(got) < 50
    assert source.error is not None and str(path) in source.error


def test_truncated_mp4_without_index_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.mp4"
    make_video(path, 20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(SourceError, match="cut.mp4"):
        open_source(str(path))


@pytest.mark.parametrize("spec", ["webcam:57", "/dev/video57"])
def test_missing_camera_is_a_one_line_error_naming_it(spec):
    with pytest.raises(SourceError) as err:
        open_source(spec)
    assert spec in str(err.value) and "\n" not in str(err.value)


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(SourceError, match="nothere.mp4"):
        open_source(str(tmp_path / "nothere.mp4"))


def test_image_folder_skips_and_counts_unreadable_images(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((8, 10, 3), i * 50, np.uint8))
    (tmp_path / "001b.jpg").write_bytes(b"not a jpeg")
    source = open_source(str(tmp_path), fps=10)
    assert isinstance(source, ImageFolder)
    frames = list(source.frames())
    assert [f.pts for f in frames] == [0, 1, 3] and source.corrupt == 1 and frames[0].time_base == (1, 10)


def test_truncated_mp4_with_its_index_up_front_gives_every_decodable_frame(tmp_path):
    """A file cut inside a frame: the decoder's frame threads must not take the frames before the cut along."""
    import av

    path = tmp_path / "cut.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:  # index first: readable when cut
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(40):
            image = np.random.default_rng(i).integers(0, 255, (120, 160, 3), np.uint8)  # big frames: a cut lands in one
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    with av.open(str(path)) as container:  # one thread, each packet alone: every frame that can be decoded
        video = container.streams.video[0]
        video.thread_type = "NONE"
        decodable = []
        for packet in container.demux(video):
            try:
                decodable += [f.pts for f in packet.decode()]
            except av.error.FFmpegError:
                continue
    source = open_source(str(path))
    assert [f.pts for f in source.frames()] == decodable and 0 < len(decodable) < 40
    assert source.corrupt == 1 and "truncated or corrupt" in source.error
