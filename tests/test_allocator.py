"""amtrain.allocator: glibc's malloc keeps large freed arrays (keep_freed_memory=true)."""
import os
import subprocess
import sys
import textwrap

import pytest

from amtrain.allocator import keep_freed_memory

# A 48 MB block (the RNN's (T, d, B) codes at T = 784, d = 15, batch 1024) allocated, written,
# freed and allocated again, as each training step does: the page faults (getrusage's minor
# faults) of the second time, with and without the setting. Through glibc's malloc directly:
# torch's own allocations add the interpreter's heap to the picture.
FAULTS = textwrap.dedent("""
    import ctypes, resource, sys
    from amtrain.allocator import keep_freed_memory
    kept = keep_freed_memory() if sys.argv[1] == "keep" else False
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    def faults_of_a_step(nbytes=48 << 20):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(nbytes)
        ctypes.memset(p, 1, nbytes)
        libc.free(p)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    faults_of_a_step()  # the first time faults its pages in either way
    print(kept, faults_of_a_step())
""")


def faults(how: str, **env) -> tuple:
    r = subprocess.run([sys.executable, "-c", FAULTS, how], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=120)
    assert r.returncode == 0, r.stderr
    kept, n = r.stdout.split()
    return kept == "True", int(n)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_a_freed_large_array_is_made_again_without_faulting_its_pages_in():
    _, default = faults("default")
    kept, n = faults("keep")
    if not kept:
        pytest.skip("not glibc")
    assert default > 10_000  # 12,288 pages of 4 KB, faulted in again
    assert n < default / 20, (n, default)


def test_the_users_own_malloc_settings_stand(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert keep_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_the_users_own_malloc_settings_stand_in_a_run():
    kept, n = faults("keep", MALLOC_MMAP_THRESHOLD_="131072")
    assert not kept and n > 10_000  # glibc's behaviour as the user asked for it
