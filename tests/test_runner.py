"""run_job with real tiny Qwen3.5 models in a local hub: order, failures, disk bounds, cleanup."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import pytest

from eval.downloads import DiskLimits, check_disk, job_dir_name
from eval.errors import InfraError
from eval.model_store.local import LocalHub
from eval.runner import JobCancelled, run_job
from eval.schemas import JobProgress
from scripts.pod_fixtures import build_hub, hub_job

NO_DISK_RESERVE = DiskLimits(min_free_bytes=0)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalHub, dict[str, str]]:
    return build_hub(tmp_path_factory.mktemp("hub"))


def job_for(revs: dict[str, str], names: list[str], job_id: str = "rj-1"):
    return hub_job(revs, names, job_id)


def test_scores_every_model_king_first_and_cleans_up(hub, tmp_path):
    store, revs = hub
    job = job_for(revs, ["miner/king", "miner/c0", "miner/badvocab"])
    phases: list[JobProgress] = []
    result = run_job(job, store, tmp_path, "cpu", on_progress=phases.append, limits=NO_DISK_RESERVE)
    assert [m.ref.repo for m in result.models] == ["miner/king", "miner/c0", "miner/badvocab"]
    king, c0, bad = result.models
    assert king.status == "ok" and len(king.prompt_kl) == len(job.prompts)
    assert all(math.isfinite(x) and x >= 0 for x in king.prompt_kl)
    assert king.content_hash and king.content_hash != c0.content_hash
    assert king.fingerprint and len(king.fingerprint) > 0
    assert bad.status == "model_error" and bad.error
    assert result.teacher.revision == revs["test/teacher"]
    assert len(result.teacher.continuation_tokens) == len(job.prompts)
    assert {"teacher", "download", "student", "fingerprint", "done"} <= {p.phase for p in phases}
    student = [p for p in phases if p.phase == "student"]
    assert any(p.prompt == p.prompt_count and p.tokens_per_s > 0 and p.eta_s == 0 for p in student)
    # mid-phase snapshots carry a rate and a positive ETA (what GET /jobs/{id} shows while a student runs)
    assert any(0 < p.prompt < p.prompt_count and p.tokens_per_s > 0 and (p.eta_s or 0) > 0 for p in student)
    assert all(p.tokens_per_s == 0 and p.eta_s is None and p.prompt == 0 for p in phases if p.phase == "download")
    # downloads and teacher cache are gone; only the (reusable) teacher snapshot stays
    assert not any((tmp_path / "models").rglob("*.safetensors"))
    assert not any((tmp_path / "teacher-cache").rglob("*"))


def test_repo_removed_mid_job_is_model_error_and_job_continues(hub, tmp_path):
    store, revs = hub
    job = job_for(revs, ["miner/king", "miner/c1", "miner/c0"], "rj-2")
    removed = []

    def on_progress(p: JobProgress) -> None:
        if p.phase == "student" and not removed:
            # the owner deletes c1 while the king is being scored (copy the repo back afterwards)
            removed.append(store.root / "miner" / "c1")
            import shutil

            shutil.move(str(store.root / "miner" / "c1"), str(tmp_path / "c1-backup"))

    try:
        result = run_job(job, store, tmp_path / "w", "cpu", on_progress=on_progress, limits=NO_DISK_RESERVE)
    finally:
        import shutil

        if (tmp_path / "c1-backup").exists():
            shutil.move(str(tmp_path / "c1-backup"), str(store.root / "miner" / "c1"))
    statuses = {m.ref.repo: (m.status, m.error) for m in result.models}
    assert statuses["miner/c1"][0] == "model_error" and "removed" in statuses["miner/c1"][1]
    assert statuses["miner/king"][0] == "ok" and statuses["miner/c0"][0] in ("ok", "early_stopped")


def test_disk_bounds_fail_the_job_not_the_model(hub, tmp_path):
    store, revs = hub
    job = job_for(revs, ["miner/king"], "rj-3")
    with pytest.raises(InfraError, match="disk"):
        run_job(job, store, tmp_path, "cpu", limits=DiskLimits(min_free_bytes=10**18))
    with pytest.raises(InfraError, match="workdir bound"):
        check_disk(tmp_path, DiskLimits(min_free_bytes=0, max_workdir_bytes=10), need_bytes=11)


def test_missing_teacher_is_infra_error(hub, tmp_path):
    store, revs = hub
    job = job_for(revs, ["miner/king"], "rj-4")
    job = job.model_copy(update={"rules": job.rules.model_copy(update={"teacher_repo": "test/absent"})})
    with pytest.raises(InfraError, match="teacher"):
        run_job(job, store, tmp_path, "cpu", limits=NO_DISK_RESERVE)


def test_cancel_stops_and_cleans(hub, tmp_path):
    store, revs = hub
    job = job_for(revs, ["miner/king", "miner/c0"], "rj-5")
    seen: list[str] = []

    def cancel() -> bool:
        return "student" in seen

    with pytest.raises(JobCancelled):
        run_job(
            job,
            store,
            tmp_path,
            "cpu",
            on_progress=lambda p: seen.append(p.phase),
            should_cancel=cancel,
            limits=NO_DISK_RESERVE,
        )
    assert not (tmp_path / "models" / job_dir_name("rj-5")).exists()
    assert not (tmp_path / "teacher-cache" / job_dir_name("rj-5")).exists()
    assert not any((tmp_path / "models").iterdir())


def test_early_stopping_compares_against_this_rounds_king_only(hub, tmp_path, monkeypatch):
    """The king is scored in full (king_kl=None); each challenger gets exactly the king's list (LESSONS 15)."""
    from eval import scoring

    store, revs = hub
    job = job_for(revs, ["miner/king", "miner/c0"], "rj-6")
    seen: list[object] = []
    real = scoring.score_student

    def spy(model, run, rules, **kw):
        seen.append(kw.get("king_kl"))
        return real(model, run, rules, **kw)

    monkeypatch.setattr(scoring, "score_student", spy)
    result = run_job(job, store, tmp_path, "cpu", limits=NO_DISK_RESERVE)
    assert seen == [None, result.models[0].prompt_kl]
    again = type(result).model_validate_json(json.dumps(result.model_dump(mode="json")))
    assert again == result
    assert Path(tmp_path / "teacher").is_dir()


def test_job_id_dotdot_never_deletes_the_workdir(hub, tmp_path):
    """Per-job scratch dirs are named from the job id; ``..`` must not make the cleanup remove the workdir."""
    store, revs = hub
    (tmp_path / "keep.txt").write_text("job records live here")
    result = run_job(job_for(revs, ["miner/king"], ".."), store, tmp_path, "cpu", limits=NO_DISK_RESERVE)
    assert result.models[0].status == "ok"
    assert (tmp_path / "keep.txt").exists() and (tmp_path / "teacher").is_dir()


def test_host_out_of_memory_while_loading_a_student_fails_the_job(hub, tmp_path, monkeypatch):
    """A MemoryError inside from_pretrained is the machine's fault: InfraError, never model_error (LESSONS 21)."""
    from eval import scoring

    store, revs = hub
    real = scoring.AutoModelForCausalLM

    class OomOnStudents:
        @staticmethod
        def from_pretrained(path, *args, **kwargs):
            if "/models/" in str(path):
                raise MemoryError("cannot allocate 1 GiB")
            return real.from_pretrained(path, *args, **kwargs)

    monkeypatch.setattr(scoring, "AutoModelForCausalLM", OomOnStudents)
    with pytest.raises(InfraError, match="MemoryError"):
        run_job(job_for(revs, ["miner/king", "miner/c0"], "rj-oom"), store, tmp_path, "cpu", limits=NO_DISK_RESERVE)
    assert not (tmp_path / "models" / job_dir_name("rj-oom")).exists()


def test_disk_full_during_a_student_download_fails_the_job(hub, tmp_path):
    store, revs = hub

    class FullDisk:
        def download(self, repo, revision, dest, allow_patterns):
            if repo.startswith("miner/"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return store.download(repo, revision, dest, allow_patterns)

        def __getattr__(self, name):
            return getattr(store, name)

    with pytest.raises(InfraError, match="No space left"):
        run_job(job_for(revs, ["miner/king"], "rj-full"), FullDisk(), tmp_path, "cpu", limits=NO_DISK_RESERVE)


def test_teacher_snapshots_are_bounded_and_counted(hub, tmp_path):
    """A new teacher revision replaces the cached one; the workdir bound counts the teacher snapshot."""
    from scripts.tiny_models import save_model_dir, tiny_config, tiny_model, train_tokenizer

    store, revs = hub
    run_job(job_for(revs, ["miner/king"], "rj-t1"), store, tmp_path, "cpu", limits=NO_DISK_RESERVE)
    src = save_model_dir(tiny_model(tiny_config(512), 7), train_tokenizer(512), tmp_path / "src-teacher2")
    new_rev = store.publish("test/teacher", src, ref="next")  # "main" stays where the other tests expect it
    job = job_for(revs, ["miner/king"], "rj-t2").model_copy(update={"teacher_revision": new_rev})
    result = run_job(job, store, tmp_path / ".", "cpu", limits=NO_DISK_RESERVE)
    assert result.teacher.revision == new_rev
    assert [p.name for p in (tmp_path / "teacher").iterdir()] == [f"test--teacher@{new_rev}"]
    with pytest.raises(InfraError, match="workdir bound"):
        check_disk(tmp_path, DiskLimits(min_free_bytes=0, max_workdir_bytes=1000))


# --- the on-policy guard in the pod's round ---------------------------------------------------------------------


def test_onpolicy_values_are_the_same_whether_the_teacher_stays_or_is_reloaded(hub, tmp_path, monkeypatch):
    """Both orders of work, on real models through the pod routine: same values; the deferred one reloads once."""
    from eval import scoring

    store, revs = hub
    loads: list[str] = []
    real = scoring.load_causal_lm
    monkeypatch.setattr(scoring, "load_causal_lm", lambda path, device: loads.append(str(path)) or real(path, device))
    phases: list[JobProgress] = []
    names = ["miner/king", "miner/c0", "miner/badvocab"]
    resident = run_job(
        job_for(revs, names, "rj-res"),
        store,
        tmp_path / "a",
        "cpu",
        limits=NO_DISK_RESERVE,
        onpolicy_mode="resident",
        on_progress=phases.append,
    )
    teacher_loads = sum("teacher" in p for p in loads)
    deferred = run_job(
        job_for(revs, names, "rj-def"), store, tmp_path / "b", "cpu", limits=NO_DISK_RESERVE, onpolicy_mode="deferred"
    )
    assert teacher_loads == 1 and sum("teacher" in p for p in loads) == 3  # deferred: loaded, freed, reloaded once
    rules = job_for(revs, names).rules
    for a, b in zip(resident.models, deferred.models, strict=True):
        assert a.onpolicy == b.onpolicy and a.prompt_kl == b.prompt_kl
    king, c0, bad = resident.models
    assert len(king.onpolicy) == len(c0.onpolicy) == rules.guarded_prompts(len(job_for(revs, names).prompts)) > 0
    assert all(1 <= o.tokens <= rules.onpolicy_new_tokens and o.text for o in king.onpolicy)
    assert bad.status == "model_error" and bad.onpolicy == []
    assert king.timings.onpolicy_s > 0 and resident.teacher.onpolicy_s > 0 and deferred.teacher.onpolicy_s > 0
    assert "onpolicy" in {p.phase for p in phases}
    assert not any((tmp_path / "b" / "models").rglob("*.safetensors"))


def test_a_model_that_fails_to_write_its_own_text_is_a_model_error(hub, tmp_path, monkeypatch):
    """The guard's generation is part of the model's evaluation: its failure costs that model, not the job."""
    from eval import onpolicy
    from eval.errors import ModelError

    store, revs = hub
    real = onpolicy.continue_own
    calls: list[int] = []

    def second_model_fails(model, *args, **kwargs):  # the king writes first, then the challenger
        calls.append(1)
        if len(calls) == 2:
            raise ModelError("generation failed: RuntimeError: shape mismatch")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onpolicy, "continue_own", second_model_fails)
    result = run_job(
        job_for(revs, ["miner/king", "miner/c0"], "rj-genfail"), store, tmp_path, "cpu", limits=NO_DISK_RESERVE
    )
    king, c0 = result.models
    assert king.status == "ok" and king.onpolicy and len(calls) == 2
    assert c0.status == "model_error" and "generation failed" in (c0.error or "") and c0.onpolicy == []
