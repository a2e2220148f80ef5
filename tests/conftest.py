"""Settings for the whole test suite (loaded before any test module imports torch)."""

import os

import pytest

# The stream tests run capture, engine and renderer processes besides the test's own threads on CI's two cores.
# With torch's default of one OpenMP thread per core in each process the cores are oversubscribed, and OpenMP's
# spin-waiting then stalls an engine for seconds at a time: under load, a test that takes 15 s took 25-85 s and
# once ran past its 60 s limit; with one thread per process, 12-18 s in ten runs. Tests that want more threads
# set them (torch.set_num_threads); child processes inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def teacher_python():
    """The teacher environment's Python (``posestream teacher setup`` makes it; ``make test`` does). Absent: the
    test fails when POSESTREAM_REQUIRE_TEACHER=1 (CI sets it), else it is skipped with the reason."""
    from engine.teacher import TeacherError, check_teacher
    from engine.teacher import teacher_python as find

    try:
        python = find()
        check_teacher(python)
    except TeacherError as err:
        if os.environ.get("POSESTREAM_REQUIRE_TEACHER") == "1":
            pytest.fail(f"POSESTREAM_REQUIRE_TEACHER=1 but the teacher cannot run: {err}")
        pytest.skip(f"no teacher environment: {err}")
    return python
