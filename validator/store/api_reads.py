"""Read-only queries the API publishes: commitments, scores, rounds, submissions, history, charts, metrics.

The loop never runs these (its own are ``validator.store.loop_reads``); they are
what the API's read-only connection serves, as typed rows (``validator.store.rows``).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence

from eval.schemas import SubmissionId
from validator.store import rows as r
from validator.store.loop_reads import LoopReads, submission_id
from validator.store.rows import build, loads

MAX_PER_PAGE = 100


class ApiReads(LoopReads):
    """The API's queries; they build on a few of the loop's (the king, the last weights, the round count)."""

    @staticmethod
    def _eval_row(row: sqlite3.Row) -> r.EvaluationRow:
        return build(
            r.EvaluationRow,
            row,
            prompt_kl=json.loads(row["prompt_kl"]),
            prompt_tokens=json.loads(row["prompt_tokens"]),
            onpolicy=loads(row["onpolicy"], []),
            suspicious=bool(row["suspicious"]),
        )

    def commitments(self) -> list[r.CommitmentRow]:
        rows = self._all(
            "SELECT hotkey, uid_at_sight AS uid, commit_block, repo AS model, revision, status,"
            " status_detail, coldkey, first_seen FROM submissions"
            " ORDER BY commit_block, hotkey"
        )
        return [build(r.CommitmentRow, row) for row in rows]

    def disqualifications(self, key: SubmissionId | None = None) -> list[r.DisqualificationRow]:
        """Every disqualification, or one submission's (``key``), in the order they were given."""
        where, args = ("WHERE hotkey = ? AND commit_block = ?", (key.hotkey, key.commit_block)) if key else ("", ())
        rows = self._all(
            "SELECT hotkey, commit_block, reason, check_name AS 'check', detail, evidence, block,"
            f" round_id, at FROM disqualifications {where} ORDER BY block, id",
            args,
        )
        return [build(r.DisqualificationRow, row, evidence=json.loads(row["evidence"])) for row in rows]

    def scores(self) -> r.Scores:
        """The king, each evaluated submission's latest evaluation (KL + 95% CI), DQ reasons, last round."""
        evals = self._all(
            "SELECT e.hotkey, e.commit_block, e.round_id, e.state, e.status, e.mean_kl, e.ci_lo, e.ci_hi, e.reason,"
            " json_array_length(e.prompt_kl) AS n_prompts, s.repo, s.revision, s.uid_at_sight AS uid"
            " FROM evaluations e JOIN submissions s USING (hotkey, commit_block)"
            " WHERE e.id = (SELECT MAX(id) FROM evaluations x WHERE x.hotkey = e.hotkey"
            " AND x.commit_block = e.commit_block) ORDER BY e.mean_kl IS NULL, e.mean_kl, e.commit_block"
        )
        dq: dict[SubmissionId, list[str]] = {}
        for row in self._db.execute("SELECT hotkey, commit_block, reason FROM disqualifications ORDER BY id"):
            dq.setdefault(submission_id(row), []).append(row["reason"])
        last = self._one(
            "SELECT id, kind, block, finished, decision, p_value FROM rounds WHERE state = 'done'"
            " ORDER BY id DESC LIMIT 1"
        )
        return r.Scores(
            king=self.current_king(),
            evaluations=[build(r.ScoreRow, e, disqualified=dq.get(submission_id(e), [])) for e in evals],
            last_round=build(r.RoundBrief, last) if last else None,
        )

    def rounds(self, page: int = 1, per_page: int = 20) -> r.RoundsPage:
        """Round summaries, newest first; ``page`` from 1, ``per_page`` bounded to MAX_PER_PAGE."""
        page, per_page = max(1, int(page)), max(1, min(MAX_PER_PAGE, int(per_page)))
        items = self._all(
            "SELECT id, kind, block, block_hash, state, started, finished, decision, p_value, king_hotkey,"
            " king_block, new_king_hotkey, new_king_block, job_id FROM rounds ORDER BY id DESC LIMIT ? OFFSET ?",
            (per_page, (page - 1) * per_page),
        )
        return r.RoundsPage(page, per_page, self.round_count(), [build(r.RoundSummary, row) for row in items])

    def round(self, round_id: int) -> r.RoundAudit | None:
        """The full audit record of one round: prompts' hashes, rules, teacher, per-prompt KL, decision."""
        row = self._one("SELECT * FROM rounds WHERE id = ?", (round_id,))
        if row is None:
            return None
        evals = self._all("SELECT * FROM evaluations WHERE round_id = ? ORDER BY id", (round_id,))
        base = self._round_row(row)
        return r.RoundAudit(
            **{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
            evaluations=[self._eval_row(e) for e in evals],
        )

    def submission(self, hotkey: str) -> list[r.SubmissionDetail]:
        """Everything about a hotkey's submissions, oldest first (ones a re-commit withdrew show as ignored)."""
        out: list[r.SubmissionDetail] = []
        for s in self._all("SELECT * FROM submissions WHERE hotkey = ? ORDER BY commit_block", (hotkey,)):
            k = (s["hotkey"], s["commit_block"])
            admission = self._one("SELECT * FROM admissions WHERE hotkey = ? AND commit_block = ?", k)
            hashes = self._all("SELECT kind, value FROM hashes WHERE hotkey = ? AND commit_block = ?", k)
            evals = self._all("SELECT * FROM evaluations WHERE hotkey = ? AND commit_block = ? ORDER BY id", k)
            out.append(
                build(
                    r.SubmissionDetail,
                    s,
                    admission=build(r.AdmissionRow, admission) if admission else None,
                    hashes={h["kind"]: h["value"] for h in hashes},
                    evaluations=[self._eval_row(e) for e in evals],
                    disqualifications=self.disqualifications(submission_id(s)),
                )
            )
        return out

    def king_history(self) -> list[r.KingChangeRow]:
        rows = self._all(
            "SELECT hotkey, commit_block, from_block, round_id, kl, reason, at FROM king_history ORDER BY id"
        )
        return [build(r.KingChangeRow, row) for row in rows]

    def metagraph(self) -> r.Metagraph | None:
        row = self._one("SELECT block, neurons, at FROM metagraph ORDER BY block DESC LIMIT 1")
        return build(r.Metagraph, row, neurons=json.loads(row["neurons"])) if row else None

    def progress(self) -> r.Progress | None:
        row = self._one("SELECT data, updated FROM progress WHERE id = 1")
        return r.Progress(json.loads(row["data"]), row["updated"]) if row else None

    # --- for the API (charts, rules, metrics) -------------------------------------
    def king_kl_series(self, limit: int = 2000) -> list[r.KingPoint]:
        """The king's mean KL after each finished round (oldest first): the king's own row of that round."""
        rows = self._all(
            "SELECT r.id AS round_id, r.block, r.finished, e.hotkey, e.commit_block, e.mean_kl AS kl"
            " FROM rounds r JOIN evaluations e ON e.round_id = r.id AND e.hotkey = r.new_king_hotkey"
            " AND e.commit_block = r.new_king_block WHERE r.state = 'done' ORDER BY r.id DESC LIMIT ?",
            (max(1, int(limit)),),
        )
        return [build(r.KingPoint, row) for row in rows[::-1]]

    def latest_rules(self) -> r.LatestRules | None:
        """The rules of the newest round (what the validator judges by now), with its digest."""
        row = self._one("SELECT id AS round_id, rules, rules_digest FROM rounds ORDER BY id DESC LIMIT 1")
        return build(r.LatestRules, row, rules=json.loads(row["rules"])) if row else None

    def stats(self, recent: int = 100) -> r.Stats:
        """Counts for monitoring: submissions by status, rounds by state, recent round durations."""
        by_status = {x[0]: x[1] for x in self._db.execute("SELECT status, COUNT(*) FROM submissions GROUP BY status")}
        by_state = {x[0]: x[1] for x in self._db.execute("SELECT state, COUNT(*) FROM rounds GROUP BY state")}
        durations = [
            x[0]
            for x in self._db.execute(
                "SELECT finished - started FROM rounds WHERE state = 'done' AND finished IS NOT NULL"
                " ORDER BY id DESC LIMIT ?",
                (max(1, int(recent)),),
            )
        ]
        model_errors = self._db.execute("SELECT COUNT(*) FROM evaluations WHERE status = 'model_error'").fetchone()[0]
        last_round = self._one("SELECT id, state, started, finished FROM rounds ORDER BY id DESC LIMIT 1")
        return r.Stats(
            submissions=by_status,
            rounds=by_state,
            durations=durations,
            model_errors=model_errors,
            last_round=build(r.LastRound, last_round) if last_round else None,
            last_weights=self.last_weights(),
        )

    def round_durations(self, bounds: Sequence[float]) -> tuple[list[int], float, int]:
        """Finished rounds' wall times as cumulative histogram counts: (count <= each bound, sum, count).

        Over every finished round ever (rounds are never deleted), so a histogram built
        from it never goes down, as Prometheus requires of one.
        """
        cases = ", ".join("COALESCE(SUM(CASE WHEN finished - started <= ? THEN 1 ELSE 0 END), 0)" for _ in bounds)
        row = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(finished - started), 0.0){', ' if cases else ''}{cases}"
            " FROM rounds WHERE state = 'done' AND finished IS NOT NULL",
            [float(b) for b in bounds],
        ).fetchone()
        return [int(x) for x in row[2:]], float(row[1]), int(row[0])

    def disqualification_counts(self) -> dict[str, int]:
        """Disqualifications by reason, ever (rows are never deleted)."""
        return {r[0]: r[1] for r in self._db.execute("SELECT reason, COUNT(*) FROM disqualifications GROUP BY reason")}
