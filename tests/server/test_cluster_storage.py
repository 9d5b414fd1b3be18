"""The shared directory of a cluster, without Ray: adapter names claimed once by many writers at
once, media stored by several stores on one directory, nothing of another writer swept away."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from framecast.common.media import encode_png
from framecast.engine.errors import FailedPrecondition, InvalidInput
from framecast.server.cluster.claims import AdapterClaims
from framecast.server.media_store import MediaStore


def test_a_name_is_claimed_by_exactly_one_of_many_at_once(tmp_path):
    # Each writer has its own AdapterClaims, as each front of a cluster does.
    claimants = [AdapterClaims(tmp_path, is_over=lambda holder: False) for _ in range(16)]
    start = threading.Barrier(len(claimants))

    def claim(index: int) -> bool:
        start.wait()
        try:
            claimants[index].claim("shot-1", f"job-{index}")
        except FailedPrecondition as refused:
            assert "is already being trained by job job-" in str(refused)
            return False
        return True

    with ThreadPoolExecutor(len(claimants)) as pool:
        won = list(pool.map(claim, range(len(claimants))))
    assert won.count(True) == 1
    winner = f"job-{won.index(True)}"
    assert claimants[0].holder("shot-1") == winner
    claimants[1].release("shot-1", "job-not-the-holder")  # only the holder releases
    assert claimants[0].held("shot-1")
    claimants[1].release("shot-1", winner)
    assert not claimants[0].held("shot-1")
    claimants[2].claim("shot-1", "job-next")


def test_a_claim_whose_job_ended_or_is_unknown_is_taken_over(tmp_path):
    ended = AdapterClaims(tmp_path, is_over=lambda holder: holder == "job-done")
    ended.claim("a", "job-done")  # its front died before releasing it
    ended.claim("a", "job-new")
    assert ended.holder("a") == "job-new"
    unknown = AdapterClaims(tmp_path, is_over=lambda holder: None, grace_s=0.0)
    unknown.claim("b", "job-of-a-front-that-died")
    unknown.claim("b", "job-later")
    assert unknown.holder("b") == "job-later"
    with pytest.raises(InvalidInput, match="header.name"):
        unknown.claim("../etc", "job", "header.name")


def test_several_stores_on_one_directory_store_the_same_bytes_once(tmp_path):
    image = encode_png(np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8))
    stores = [MediaStore(tmp_path, sweep=False) for _ in range(8)]
    start = threading.Barrier(len(stores))

    def put(store: MediaStore):
        start.wait()
        return store.put(image, filename="frame.png")

    with ThreadPoolExecutor(len(stores)) as pool:
        infos = list(pool.map(put, stores))
    assert len({info.id for info in infos}) == 1
    assert [info.id for info in stores[0].list()] == [infos[0].id]
    assert stores[3].read_bytes(infos[0].id) == image
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_a_store_that_does_not_sweep_leaves_another_writers_upload_alone(tmp_path):
    writer = MediaStore(tmp_path)
    in_flight = writer.scratch_dir()  # another process's job writing its result
    (in_flight / "result.mp4").write_bytes(b"half")
    MediaStore(tmp_path, sweep=False)  # a replica starting meanwhile
    assert (in_flight / "result.mp4").read_bytes() == b"half"
    MediaStore(tmp_path)  # a single server starting: the only writer, it sweeps
    assert not in_flight.exists()


def test_a_cluster_and_a_single_server_never_share_a_data_directory(tmp_path):
    from framecast.server.app import lock_data_dir

    front, replica = lock_data_dir(tmp_path, shared=True), lock_data_dir(tmp_path, shared=True)
    with pytest.raises(InvalidInput, match="is used by a framecast cluster"):
        lock_data_dir(tmp_path)  # serve on the cluster's directory
    front.close()
    replica.close()
    server = lock_data_dir(tmp_path)
    with pytest.raises(InvalidInput, match=r"is used by another framecast server \(pid \d+"):
        lock_data_dir(tmp_path, shared=True)
    server.close()


def test_cluster_options_a_cluster_cannot_start_with_are_named(capsys, tiny_model_dir, tmp_path):
    pytest.importorskip("ray.serve")
    from framecast.client.cli import main

    code = main(["cluster", "--model", str(tiny_model_dir), "--data", str(tmp_path), "--replicas", "2",
                 "--max-replicas", "1"])  # fmt: skip
    assert code == 2
    assert "error: --max-replicas: must be >= --replicas (2), or 0 for a fixed number of replicas (got 1)" in \
        capsys.readouterr().err  # fmt: skip
    assert main(["cluster", "--model", str(tmp_path / "none"), "--data", str(tmp_path)]) == 2
    assert "error: --model:" in capsys.readouterr().err
