"""Time left: from what earlier jobs of the same kind took, scaled by images, epochs and trials; unknown, and
saying why, when nothing earlier is like the job. On SQLite and PostgreSQL (the `database` fixture)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from config.settings import Liveness
from dashboard.eta import Estimator
from db import operations as ops
from db.models import Job, JobStatus

SPEC = {"backbone": "VGG16", "image_size": 32, "epochs": 10, "batch_size": 8, "learning_rate": 1e-3, "patience": 10,
        "weights": "none", "validation_split": 0.2, "test_split": 0.2}
# An earlier job on 100 images (60 train), which decoded them and computed their features: 60 s of wall
# time, 4 s decoding (0.04 s an image), 5 s features (0.05 s an image), 40 s training, so 11 s fixed.
EARLIER = {"phase_seconds": {"decoding images": 4.0, "computing features": 5.0, "training": 40.0}, "n_train": 60,
           "n_validation": 20, "n_test": 20, "feature_cache": True, "cached": {"images": False, "features": False},
           "reproducibility": {"device": {"kind": "CPU"}}}


def dataset(database, images: int = 100) -> int:
    with database.transaction() as session:
        return ops.add_dataset(session, name="d", root="/d", classes=["a", "b"],
                               counts={"a": images // 2, "b": images - images // 2}, skipped=[], sha256="0" * 64,
                               manifest=[]).id


def benchmark(database, specs: list[dict], images: int = 100, on: int | None = None) -> list[int]:
    """A benchmark of these job specs on a new dataset of `images` images (or on dataset `on`); its job ids."""
    dataset_id = on or dataset(database, images)
    with database.transaction() as session:
        created = ops.create_benchmark(session, name="b", dataset_id=dataset_id,
                                       config={"validation_split": 0.2, "test_split": 0.2}, specs=specs)
        return [job.id for job in created.jobs]


def finished_earlier(database, job_id: int, summary: dict = EARLIER, wall_seconds: float = 60.0) -> None:
    with database.transaction() as session:
        job = session.get(Job, job_id)
        now = ops.database_now(session)
        job.status, job.summary = JobStatus.SUCCEEDED, summary
        job.started_at, job.finished_at = now - timedelta(seconds=wall_seconds), now


def cpu_workers(database, count: int) -> None:
    with database.transaction() as session:
        for number in range(1, count + 1):
            ops.register_worker(session, f"cpu{number}@host", "host", "CPU (2 cores)", None, ["default"])
        ops.register_worker(session, "predict1@host", "host", "CPU (2 cores)", None, ["predict"])


def estimates(database, job_ids: list[int]):
    with database.transaction() as session:
        estimator = Estimator(session, Liveness().worker_offline_after)
        jobs = [session.get(Job, job_id) for job_id in job_ids]
        return [estimator.job(job) for job in jobs], estimator.benchmark(jobs[0].benchmark)


def test_a_queued_job_is_estimated_from_an_earlier_one_of_its_kind_scaled_by_its_work(database):
    cpu_workers(database, 1)
    finished_earlier(database, benchmark(database, [SPEC])[0])
    # Another dataset, twice the images and twice the epochs: fixed 11 s, decoding 0.04 s x 200, features
    # 0.05 s x 200, training 40 s x 2 x 2.
    [queued] = benchmark(database, [{**SPEC, "epochs": 20}], images=200)
    [job], whole = estimates(database, [queued])
    assert job.seconds == pytest.approx(11 + 8 + 10 + 160)
    assert job.basis == "1 earlier job of VGG16 at 32 px on CPU, cached features"
    assert whole.seconds == pytest.approx(job.seconds)


def test_more_trials_and_more_workers_scale_the_estimate(database):
    cpu_workers(database, 2)
    finished_earlier(database, benchmark(database, [SPEC])[0])
    ids = benchmark(database, [{**SPEC, "learning_rate": [1e-3, 3e-4], "repeats": 2}, SPEC, SPEC])
    jobs, whole = estimates(database, ids)
    assert jobs[0].seconds == pytest.approx(11 + 4 + 5 + 40 * 4)  # four trials' training; it decodes and computes
    # The later jobs find the first one's images and features in the cache.
    assert [job.seconds for job in jobs[1:]] == [pytest.approx(11 + 40)] * 2
    assert whole.seconds == pytest.approx(max(180, (180 + 51 + 51) / 2))
    assert whole.basis == "3 jobs left on 2 workers"


def test_without_an_earlier_job_of_the_kind_the_estimate_is_unknown_and_says_why(database):
    cpu_workers(database, 1)
    finished_earlier(database, benchmark(database, [SPEC])[0])
    ids = benchmark(database, [{**SPEC, "backbone": "ResNet50"}, {**SPEC, "augment": True}])
    jobs, whole = estimates(database, ids)
    assert [(job.seconds, job.basis) for job in jobs] == [
        (None, "unknown: no earlier job of ResNet50 at 32 px on CPU, cached features"),
        (None, "unknown: no earlier job of VGG16 at 32 px on CPU, end to end")]
    assert whole.seconds is None


def test_a_running_job_counts_down_and_a_finished_one_has_nothing_left(database):
    cpu_workers(database, 1)
    finished_earlier(database, benchmark(database, [SPEC])[0])
    running, done = benchmark(database, [SPEC, SPEC])
    with database.transaction() as session:
        ops.claim_job(session, running, "cpu1@host")
        session.get(Job, running).started_at = ops.database_now(session) - timedelta(seconds=45)
    jobs, _ = estimates(database, [running, done])
    assert jobs[0].seconds == pytest.approx(60 - 45, abs=2)
    finished_earlier(database, done)
    jobs, _ = estimates(database, [running, done])
    assert (jobs[1].seconds, jobs[1].basis) == (0.0, "finished")


def test_a_benchmark_on_a_dataset_an_earlier_job_used_finds_images_and_features_in_the_cache(database):
    cpu_workers(database, 1)
    first = dataset(database)
    finished_earlier(database, benchmark(database, [SPEC], on=first)[0])
    same_size, other_backbone = benchmark(database, [SPEC, {**SPEC, "backbone": "VGG19"}], on=first)
    finished_earlier(database, benchmark(database, [{**SPEC, "backbone": "VGG19"}])[0])  # VGG19's history
    jobs, _ = estimates(database, [same_size, other_backbone])
    assert jobs[0].seconds == pytest.approx(11 + 40)  # decoded and computed before
    assert jobs[1].seconds == pytest.approx(11 + 5 + 40)  # its images are decoded; its features are not


def test_no_worker_for_the_pool_means_unknown(database):
    finished_earlier(database, benchmark(database, [SPEC])[0])
    [queued] = benchmark(database, [SPEC])
    [job], _ = estimates(database, [queued])
    assert (job.seconds, job.basis) == (None, "unknown: no online worker of pool 'default' to run it on")


@pytest.mark.parametrize("seconds, basis, shown", [
    (None, "unknown: no earlier job of VGG16 at 32 px on CPU, cached features",
     "time left unknown: no earlier job of VGG16 at 32 px on CPU, cached features"),
    (20.0, "1 job left on 1 worker", "under a minute left (1 job left on 1 worker)"),
    (150.0, "2 jobs left on 1 worker", "about 2 min left (2 jobs left on 1 worker)"),
    (3 * 3600 + 5 * 60, "5 jobs left on 2 workers", "about 3 h 5 min left (5 jobs left on 2 workers)"),
])
def test_tlbench_submit_wait_shows_the_time_left_to_the_minute_and_its_basis(seconds, basis, shown):
    from tlbench.progress import render_table

    benchmark = {"id": 1, "name": "b", "status": "running", "eta_seconds": seconds, "eta_basis": basis, "jobs": [
        {"backbone": "VGG16", "status": "running", "epochs_done": 1, "epochs": 3, "summary": None, "error": None}]}
    assert render_table(benchmark).splitlines()[0] == f"benchmark 1 (b): running · {shown}"


def test_with_earlier_jobs_of_two_trial_counts_the_training_cost_follows_the_line_through_them(database):
    from dashboard.eta import Pace, training_rate

    # One trial: 1.0 s an image-epoch; four trials together: 2.5 s (they share part of the cost).
    paces = [Pace(10.0, 1, 1.0, None, None), Pace(10.0, 4, 2.5, None, None)]
    assert training_rate(paces, 1) == pytest.approx(1.0)
    assert training_rate(paces, 9) == pytest.approx(1.0 + 0.5 * 8)
    # With one trial count only: in proportion to the trials.
    assert training_rate(paces[:1], 9) == pytest.approx(9.0)
