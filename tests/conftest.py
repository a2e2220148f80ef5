"""Settings for the whole test suite (loaded before any test module imports torch)."""

import os

# The stream tests run capture, engine and renderer processes besides the test's own threads on CI's two cores.
# With torch's default of one OpenMP thread per core in each process the cores are oversubscribed, and OpenMP's
# spin-waiting then stalls an engine for seconds at a time: under load, a test that takes 15 s took 25-85 s and
# once ran past its 60 s limit; with one thread per process, 12-18 s in ten runs. Tests that want more threads
# set them (torch.set_num_threads); child processes inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
