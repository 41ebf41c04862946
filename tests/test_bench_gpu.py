"""scripts/bench_gpu.py --tiny runs the GPU benchmark's code on the CPU, so it cannot rot between GPU runs."""

from __future__ import annotations

import json

from scripts.bench_gpu import main


def test_tiny_run_measures_every_figure(tmp_path, capsys) -> None:
    out = tmp_path / "bench.jsonl"
    assert main(["--tiny", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    figures = {row["figure"]: row for row in rows}
    expected = {
        "setup",
        "kl.bf16_logits_plain",
        "kl.exact_logits_plain",
        "kl.kl_from_hidden",
        "student.new",
        "student.shipped",
        "student.new_memory",
        "onpolicy.student",
        "teacher.phase",
        "onpolicy.teacher",
    }
    assert expected <= set(figures)
    assert not [f for f in figures if f.endswith(".error")]
    assert figures["kl.kl_from_hidden"]["mean_rel_err"] < 1e-4
    assert figures["student.new"]["tokens_per_s"] > 0 and figures["teacher.phase"]["total_s"] > 0
    assert "student.new" in capsys.readouterr().out  # the table


def test_a_failing_part_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch) -> None:
    import scripts.bench_gpu as bench

    def broken(*_args, **_kwargs):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(bench, "bench_kl", broken)
    out = tmp_path / "bench.jsonl"
    assert main(["--tiny", "--only", "kl", "--only", "teacher", "--out", str(out)]) == 1
    figures = {json.loads(line)["figure"] for line in out.read_text().splitlines()}
    assert "kl.error" in figures and "teacher.phase" in figures
