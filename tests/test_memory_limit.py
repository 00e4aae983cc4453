"""The memory the server may use (moleseg.core.memorylimit): the machine's or its container's cgroup limit,
whichever is smaller, read from a fake /proc and /sys tree; each user's share of it for held analyses."""

from __future__ import annotations

from pathlib import Path

from moleseg.core import config
from moleseg.core.memorylimit import available_memory_bytes, cgroup_memory, memory_limit_bytes

GIB, MIB = 1024**3, 1024**2


def fake_root(root: Path, cgroup: str, files: dict[str, str], total_gib: int = 64, free_gib: int = 60) -> Path:
    """A tree of ``proc/meminfo`` (``total_gib`` GiB, ``free_gib`` available), ``proc/self/cgroup`` (``cgroup``)
    and ``files`` (path under ``root``: text)."""
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "meminfo").write_text(f"MemTotal:       {total_gib * 1024 * 1024} kB\n"
                                           f"MemFree:        1024 kB\nMemAvailable:   {free_gib * 1024 * 1024} kB\n")
    (root / "proc" / "self" / "cgroup").write_text(cgroup)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cgroup_v2_limit_of_2_gib_gives_each_user_512_mib(tmp_path):
    group = "sys/fs/cgroup/kubepods/pod1/app"
    root = fake_root(tmp_path, "0::/kubepods/pod1/app\n", {
        "sys/fs/cgroup/kubepods/memory.max": "max\n",
        "sys/fs/cgroup/kubepods/pod1/memory.max": f"{4 * GIB}\n",
        f"{group}/memory.max": f"{2 * GIB}\n",
        f"{group}/memory.current": f"{3 * GIB // 2}\n",  # 1.5 GiB used, 0.5 GiB of it droppable page cache
        f"{group}/memory.stat": f"anon {GIB}\nfile {GIB // 2}\ninactive_file {GIB // 2}\nactive_file 0\n"})
    assert memory_limit_bytes(root) == 2 * GIB  # not the machine's 64 GiB
    assert config.analysis_bytes_per_user(root) == 512 * MIB
    assert cgroup_memory(root).limit == 2 * GIB and cgroup_memory(root).used == GIB
    assert available_memory_bytes(root) == GIB  # not the machine's 60 GiB available


def test_a_tighter_limit_above_the_group_counts(tmp_path):
    root = fake_root(tmp_path, "0::/kubepods/pod1/app\n", {
        "sys/fs/cgroup/kubepods/pod1/memory.max": f"{GIB}\n",
        "sys/fs/cgroup/kubepods/pod1/memory.current": f"{GIB // 4}\n",
        "sys/fs/cgroup/kubepods/pod1/app/memory.max": "max\n"})
    assert memory_limit_bytes(root) == GIB and config.analysis_bytes_per_user(root) == 256 * MIB
    assert available_memory_bytes(root) == 3 * GIB // 4


def test_a_cgroup_v1_container_reads_its_own_root_group(tmp_path):
    """docker on cgroup v1: /proc/self/cgroup names the host's group, the container's mount shows it as its root."""
    root = fake_root(tmp_path, "12:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n0::/docker/abc\n", {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{2 * GIB}\n",
        "sys/fs/cgroup/memory/memory.usage_in_bytes": f"{GIB}\n",
        "sys/fs/cgroup/memory/memory.stat": f"cache 0\ninactive_file 7\ntotal_inactive_file {GIB // 2}\n"})
    assert memory_limit_bytes(root) == 2 * GIB and config.analysis_bytes_per_user(root) == 512 * MIB
    assert available_memory_bytes(root) == 3 * GIB // 2


def test_no_limit_leaves_the_machine_s_memory(tmp_path):
    root = fake_root(tmp_path, "4:memory:/user.slice\n0::/user.slice\n", {
        "sys/fs/cgroup/memory/user.slice/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
        "sys/fs/cgroup/user.slice/memory.max": "max\n"}, total_gib=16, free_gib=10)
    assert cgroup_memory(root) is None
    assert memory_limit_bytes(root) == 16 * GIB and config.analysis_bytes_per_user(root) == 4 * GIB
    assert available_memory_bytes(root) == 10 * GIB


def test_a_machine_whose_memory_cannot_be_read_gets_the_fixed_share(tmp_path):
    assert memory_limit_bytes(tmp_path) is None and available_memory_bytes(tmp_path) is None
    assert config.analysis_bytes_per_user(tmp_path) == config.ANALYSIS_BYTES_UNKNOWN_MEMORY == 8 * GIB
    root = fake_root(tmp_path / "limited", "0::/app\n", {"sys/fs/cgroup/app/memory.max": f"{GIB}\n"})
    (root / "proc" / "meminfo").unlink()
    assert memory_limit_bytes(root) == GIB and available_memory_bytes(root) == GIB  # nothing used is counted as 0


def test_a_group_folder_that_cannot_be_looked_at_is_left_out(tmp_path):
    """Looking at a group's folder may fail otherwise than 'missing' (EACCES in a folder that cannot be searched;
    here a name too long, which root cannot be denied): it was raised out of the image reader's pixel budget and the
    analyses' share; the folder is left out, the groups above it still count."""
    root = fake_root(tmp_path, "0::/" + "a" * 300 + "\n", {"sys/fs/cgroup/memory.max": f"{GIB}\n"})
    assert memory_limit_bytes(root) == GIB and available_memory_bytes(root) == GIB
    assert config.analysis_bytes_per_user(root) == 256 * MIB
