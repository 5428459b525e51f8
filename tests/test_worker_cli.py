"""`tlbench worker` alone (no web app, no `tlbench up`): it prepares the database and its workers register;
which workers it starts (GPUs found by NVML or nvidia-smi, pinned, named, with their pools)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from config.settings import load_settings
from db.session import Database
from testsupport.stack import wait_until
from testsupport.workers import registered_workers
from tlbench.cli import main
from worker.devices import Gpu, gpus_from_nvidia_smi
from worker.launch import choose_devices, worker_processes
from worker.names import NameLocks


def test_a_worker_started_on_an_empty_home_registers_itself_and_stops_quietly(tmp_path, redis_socket):
    home = tmp_path / "home"
    env = {**os.environ, "TLBENCH_HOME": str(home), "REDIS_URL": f"redis+socket://{redis_socket}"}
    env.pop("DATABASE_URL", None)
    env.pop("TLBENCH_STORAGE", None)
    output = tmp_path / "output"
    with output.open("w") as sink:  # a file, not a pipe: the workers' logs must never block on a full pipe
        process = subprocess.Popen([sys.executable, "-m", "tlbench", "worker", "--gpus", "none"], env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)
    database = Database(f"sqlite:///{home / 'tlbench.db'}")
    try:
        names = wait_until(lambda: len(registered_workers(database)) == 2 and registered_workers(database),
                           60, "the training and prediction workers to register")
        assert sorted(name.split("@")[0] for name in names) == ["cpu1", "predict1"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        database.dispose()
    said = output.read_text()
    assert "tlbench: started cpu1@" in said and "SIGTERM received, stopping" in said
    assert f"tlbench: storage {home}: read and write ok" in said  # the default: the home itself
    assert "Traceback" not in said, said


# Settings for building worker command lines only: nothing is created under this home.
SETTINGS = load_settings({"TLBENCH_HOME": "/nonexistent/tlbench-home"})
FAKE_GPUS = [Gpu("0", "Fake A", 80 * 2**30), Gpu("1", "Fake B", 80 * 2**30), Gpu("2", "Fake C", 40 * 2**30)]


def test_nvidia_smi_listing_is_read_when_nvml_is_not_there(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\n# index, uuid, memory.total, name\n'
                    'echo "0, GPU-a1, 143771, NVIDIA H200"\necho "1, GPU-b2, 143771, NVIDIA H200, 141GB HBM3e"\n')
    fake.chmod(0o755)
    assert gpus_from_nvidia_smi(str(fake)) == [Gpu("0", "NVIDIA H200", 143771 * 2**20, "GPU-a1"),
                                               Gpu("1", "NVIDIA H200, 141GB HBM3e", 143771 * 2**20, "GPU-b2")]
    assert gpus_from_nvidia_smi(str(tmp_path / "missing")) == []


def test_gpus_all_some_or_none():
    assert choose_devices("all", found=FAKE_GPUS) == FAKE_GPUS
    assert choose_devices("0,2", found=FAKE_GPUS) == [FAKE_GPUS[0], FAKE_GPUS[2]]
    assert choose_devices("none", cpu_workers=2, found=FAKE_GPUS) == [None, None]
    assert choose_devices("all", cpu_workers=3, found=[]) == [None, None, None]  # no GPU: CPU workers
    assert choose_devices("none", cpu_workers=0, found=FAKE_GPUS) == []  # only the prediction worker
    with pytest.raises(ValueError, match="asks for GPU 5, but this host has 0, 1, 2"):
        choose_devices("5", found=FAKE_GPUS)
    with pytest.raises(ValueError, match="all, none or a list of GPU indexes"):
        choose_devices("first", found=FAKE_GPUS)


def test_one_pinned_worker_per_gpu_serving_the_default_pool_and_its_own(tmp_path):
    specs = worker_processes(SETTINGS, "0,2", pools=["a100", "big"], names=NameLocks("sqlite:///x.db", root=tmp_path),
                             found=FAKE_GPUS)
    try:
        gpu0, gpu2, predict = specs
        assert [spec.name.split("@")[0] for spec in specs] == ["gpu0", "gpu2", "predict1"]
        assert (gpu0.env["CUDA_VISIBLE_DEVICES"], gpu2.env["CUDA_VISIBLE_DEVICES"]) == ("0", "2")
        assert gpu2.env["TLBENCH_DEVICE"] == "GPU 2: Fake C" and gpu2.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert gpu0.argv[gpu0.argv.index("--queues") + 1] == "default,a100,big"
        assert gpu0.argv[gpu0.argv.index("--hostname") + 1] == gpu0.name
        assert predict.env["CUDA_VISIBLE_DEVICES"] == "-1"
        assert predict.argv[predict.argv.index("--queues") + 1] == "predict"
        assert all(len(spec.pass_fds) == 1 for spec in specs)  # each holds the lock of its name
    finally:
        for spec in specs:
            os.close(spec.pass_fds[0])


def test_cpu_workers_of_one_command_share_the_cores_for_tensorflow_threads(tmp_path, monkeypatch):
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    specs = worker_processes(SETTINGS, "none", cpu_workers=2, names=NameLocks("sqlite:///y.db", root=tmp_path), found=[])
    try:
        assert [spec.name.split("@")[0] for spec in specs] == ["cpu1", "cpu2", "predict1"]
        share = str(max(1, os.cpu_count() // 2))
        assert {(spec.env["TF_NUM_INTRAOP_THREADS"], spec.env["TF_NUM_INTEROP_THREADS"]) for spec in specs[:2]} == \
            {(share, share)}
        assert all(spec.env["CUDA_VISIBLE_DEVICES"] == "-1" for spec in specs)
    finally:
        for spec in specs:
            os.close(spec.pass_fds[0])


@pytest.mark.parametrize("arguments, says", [
    (["worker", "--pool", "A100"], "'A100' is not a pool name"),
    (["worker", "--pools", "a100,predict"], "'predict' is the prediction workers' queue"),
    (["up", "--pool", "big pool"], "'big pool' is not a pool name"),
    (["worker", "--workers", "-1"], "--workers must be 0 or more"),
])
def test_bad_worker_options_are_refused_before_anything_starts(arguments, says, capsys, tmp_path):
    assert main([*arguments, "--home", str(tmp_path / "home")]) == 1
    assert says in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def mode(folder) -> int:
    """A folder's permission bits."""
    return folder.stat().st_mode & 0o777


def test_a_new_lock_folder_and_its_cluster_folder_are_open_to_their_user_only(tmp_path):
    root = tmp_path / "locks"
    locks = NameLocks("sqlite:///modes.db", root=root)
    locks.next_free("cpu").release()  # the cluster's folder first: the root must not get the umask's mode
    assert (mode(root), mode(locks.cluster)) == (0o700, 0o700)


def test_a_lock_folder_tlbench_named_is_closed_again_and_one_given_keeps_its_mode(tmp_path):
    given = tmp_path / "given"
    locks = NameLocks("sqlite:///modes.db", root=given)
    locks.cluster.mkdir(parents=True)
    given.chmod(0o755)
    locks.cluster.chmod(0o755)  # as an earlier tlbench left them
    locks.next_free("cpu").release()
    assert (mode(given), mode(locks.cluster)) == (0o755, 0o700)

    default_root = tmp_path / f"tlbench-locks-{os.getuid()}"  # the folder of a process whose TMPDIR is tmp_path
    default_root.mkdir(mode=0o755)
    default_root.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "TLBENCH_LOCK_DIR"}
    subprocess.run([sys.executable, "-c", "from worker.names import NameLocks; "
                    "NameLocks('sqlite:///modes.db').next_free('cpu')"],
                   env={**env, "TMPDIR": str(tmp_path)}, check=True, timeout=60)
    assert mode(default_root) == 0o700
