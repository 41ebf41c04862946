"""Read-only queries on the store, for the loop and the API. All return plain dicts or contest types.

Kept apart from the writers so the API's read-only connection exposes exactly
these. JSON columns are decoded here, so callers never see raw JSON text.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from eval.schemas import SubmissionId
from validator.contest import Candidate

MAX_PER_PAGE = 100


def _id(row: sqlite3.Row | dict[str, Any]) -> SubmissionId:
    """The one place a row's key columns become a submission id."""
    return SubmissionId(row["hotkey"], row["commit_block"])


_CLAIMING = "JOIN submissions USING (hotkey, commit_block) WHERE submissions.status != 'ignored'"


class StoreReads:
    _db: sqlite3.Connection

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(sql, args)]

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        row = self._db.execute(sql, args).fetchone()
        return dict(row) if row else None

    @staticmethod
    def _round_row(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
        d = dict(row)
        d["prompt_sha256s"] = json.loads(d["prompt_sha256s"])
        d["rules"] = json.loads(d["rules"])
        d["models"] = [SubmissionId(h, b) for h, b in json.loads(d["models"])]
        return d

    @staticmethod
    def _eval_row(row: dict[str, Any]) -> dict[str, Any]:
        row["prompt_kl"] = json.loads(row["prompt_kl"])
        row["prompt_tokens"] = json.loads(row["prompt_tokens"])
        row["onpolicy"] = json.loads(row.get("onpolicy") or "[]")
        row["suspicious"] = bool(row["suspicious"])
        return row

    # --- for the loop -----------------------------------------------------------
    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def meta(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self._all("SELECT key, value FROM meta")}

    def known_keys(self) -> set[SubmissionId]:
        return {_id(r) for r in self._db.execute("SELECT hotkey, commit_block FROM submissions")}

    def round_count(self) -> int:
        """Rounds ever created, in any state (the loop numbers job attempts by it)."""
        return int(self._db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0])

    def strikes(self, key: SubmissionId) -> int:
        """Missing-repo strikes of one submission (0 when unknown)."""
        row = self._db.execute(
            "SELECT strikes FROM submissions WHERE hotkey = ? AND commit_block = ?", (key.hotkey, key.commit_block)
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def candidates(self, registered_hotkeys: Iterable[str]) -> list[Candidate]:
        """Every submission with a model, as the planner sees it (``registered`` from the current neurons)."""
        reg = set(registered_hotkeys)
        rows = self._db.execute(
            "SELECT hotkey, commit_block, repo, revision, coldkey, status, last_kl FROM submissions"
            " WHERE repo IS NOT NULL ORDER BY commit_block, hotkey"
        )
        return [
            Candidate(
                r["hotkey"],
                r["commit_block"],
                r["repo"],
                r["revision"],
                r["coldkey"] or "",
                r["status"],
                r["last_kl"],
                r["hotkey"] in reg,
            )
            for r in rows
        ]

    def pending_admissions(self, block: int) -> list[dict[str, Any]]:
        """Submissions waiting for admission whose retry time (if any) has come."""
        return self._all(
            "SELECT s.*, a.attempts, a.next_retry_block FROM submissions s LEFT JOIN admissions a"
            " USING (hotkey, commit_block) WHERE s.status = 'pending'"
            " AND (a.next_retry_block IS NULL OR a.next_retry_block <= ?) ORDER BY s.commit_block, s.hotkey",
            (block,),
        )

    def live_keys(self) -> list[SubmissionId]:
        """Submissions that still count and a re-commit would withdraw (``contest.LIVE_STATUSES``)."""
        rows = self._db.execute(
            "SELECT hotkey, commit_block FROM submissions WHERE status IN ('pending', 'admitted', 'evaluated')"
        )
        return [_id(r) for r in rows]

    # Ownership (LESSONS 1-5) is claimed only by submissions that still count: a withdrawn one
    # (status 'ignored') is gone from the chain, so a validator starting now could not know it.
    def known_content_hashes(self) -> list[tuple[SubmissionId, str]]:
        rows = self._db.execute(f"SELECT hotkey, commit_block, value FROM hashes {_CLAIMING} AND kind = 'content'")
        return [(_id(r), r["value"]) for r in rows]

    def metadata_hash_owner(self, value: str) -> SubmissionId | None:
        holders = self.metadata_hash_holders(value)
        return holders[0] if holders else None

    def metadata_hash_holders(self, value: str) -> list[SubmissionId]:
        """Every submission that counts, recorded with this metadata hash, earliest commit first."""
        rows = self._db.execute(
            f"SELECT hotkey, commit_block FROM hashes {_CLAIMING} AND kind = 'metadata'"
            " AND value = ? ORDER BY commit_block, hotkey",
            (value,),
        )
        return [_id(r) for r in rows]

    def known_fingerprints(self) -> list[tuple[SubmissionId, list[float]]]:
        rows = self._db.execute(f"SELECT hotkey, commit_block, vector FROM fingerprints {_CLAIMING}")
        return [(_id(r), json.loads(r["vector"])) for r in rows]

    def current_king(self) -> dict[str, Any] | None:
        return self._one(
            "SELECT k.*, s.repo, s.revision, s.uid_at_sight FROM king k JOIN submissions s"
            " USING (hotkey, commit_block) WHERE k.id = 1"
        )

    def last_weights(self, successful: bool = True, *, confirmed: bool = False) -> dict[str, Any] | None:
        """The latest weight submission: any, accepted (``successful``), or seen on chain (``confirmed``)."""
        where = "WHERE confirmed = 1" if confirmed else "WHERE success = 1" if successful else ""
        return self._weights_row(f"SELECT * FROM weight_submissions {where} ORDER BY id DESC LIMIT 1")

    def pending_weights(self) -> dict[str, Any] | None:
        """The accepted submission still waiting to show on chain (a commit before its reveal), if any."""
        return self._weights_row(
            "SELECT * FROM weight_submissions WHERE success = 1 AND confirmed IS NULL ORDER BY id DESC LIMIT 1"
        )

    def _weights_row(self, sql: str) -> dict[str, Any] | None:
        row = self._one(sql)
        if row:
            row["uids"], row["weights"] = json.loads(row["uids"]), json.loads(row["weights"])
        return row

    # --- for the API ------------------------------------------------------------
    def commitments(self) -> list[dict[str, Any]]:
        return self._all(
            "SELECT hotkey, uid_at_sight AS uid, commit_block, repo AS model, revision, status,"
            " status_detail, coldkey, first_seen FROM submissions"
            " ORDER BY commit_block, hotkey"
        )

    def disqualifications(self) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT hotkey, commit_block, reason, check_name AS 'check', detail, evidence, block,"
            " round_id, at FROM disqualifications ORDER BY block, id"
        )
        for r in rows:
            r["evidence"] = json.loads(r["evidence"])
        return rows

    def scores(self) -> dict[str, Any]:
        """The king, each evaluated submission's latest evaluation (KL + 95% CI), DQ reasons, last round."""
        evals = self._all(
            "SELECT e.hotkey, e.commit_block, e.round_id, e.state, e.status, e.mean_kl, e.ci_lo, e.ci_hi, e.reason,"
            " json_array_length(e.prompt_kl) AS n_prompts, s.repo, s.revision, s.uid_at_sight AS uid"
            " FROM evaluations e JOIN submissions s USING (hotkey, commit_block)"
            " WHERE e.id = (SELECT MAX(id) FROM evaluations x WHERE x.hotkey = e.hotkey"
            " AND x.commit_block = e.commit_block) ORDER BY e.mean_kl IS NULL, e.mean_kl, e.commit_block"
        )
        dq: dict[SubmissionId, list[str]] = {}
        for r in self._db.execute("SELECT hotkey, commit_block, reason FROM disqualifications ORDER BY id"):
            dq.setdefault(_id(r), []).append(r["reason"])
        for e in evals:
            e["disqualified"] = dq.get(_id(e), [])
        last = self._one(
            "SELECT id, kind, block, finished, decision, p_value FROM rounds WHERE state = 'done'"
            " ORDER BY id DESC LIMIT 1"
        )
        return {"king": self.current_king(), "evaluations": evals, "last_round": last}

    def rounds(self, page: int = 1, per_page: int = 20) -> dict[str, Any]:
        """Round summaries, newest first; ``page`` from 1, ``per_page`` bounded to MAX_PER_PAGE."""
        page, per_page = max(1, int(page)), max(1, min(MAX_PER_PAGE, int(per_page)))
        total = self._db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0]
        items = self._all(
            "SELECT id, kind, block, block_hash, state, started, finished, decision, p_value, king_hotkey,"
            " king_block, new_king_hotkey, new_king_block, job_id FROM rounds ORDER BY id DESC LIMIT ? OFFSET ?",
            (per_page, (page - 1) * per_page),
        )
        return {"page": page, "per_page": per_page, "total": total, "items": items}

    def round(self, round_id: int) -> dict[str, Any] | None:
        """The full audit record of one round: prompts' hashes, rules, teacher, per-prompt KL, decision."""
        row = self._one("SELECT * FROM rounds WHERE id = ?", (round_id,))
        if row is None:
            return None
        out = self._round_row(row)
        out["evaluations"] = [
            self._eval_row(e)
            for e in self._all("SELECT * FROM evaluations WHERE round_id = ? ORDER BY id", (round_id,))
        ]
        return out

    def submission(self, hotkey: str) -> list[dict[str, Any]]:
        """Everything about a hotkey's submissions, oldest first (ones a re-commit withdrew show as ignored)."""
        subs = self._all("SELECT * FROM submissions WHERE hotkey = ? ORDER BY commit_block", (hotkey,))
        for s in subs:
            k = (s["hotkey"], s["commit_block"])
            s["admission"] = self._one("SELECT * FROM admissions WHERE hotkey = ? AND commit_block = ?", k)
            s["hashes"] = {
                r["kind"]: r["value"]
                for r in self._all("SELECT kind, value FROM hashes WHERE hotkey = ? AND commit_block = ?", k)
            }
            s["evaluations"] = [
                self._eval_row(e)
                for e in self._all("SELECT * FROM evaluations WHERE hotkey = ? AND commit_block = ? ORDER BY id", k)
            ]
            s["disqualifications"] = [d for d in self.disqualifications() if (d["hotkey"], d["commit_block"]) == k]
        return subs

    def king_history(self) -> list[dict[str, Any]]:
        return self._all(
            "SELECT hotkey, commit_block, from_block, round_id, kl, reason, at FROM king_history ORDER BY id"
        )

    def metagraph(self) -> dict[str, Any] | None:
        row = self._one("SELECT block, neurons, at FROM metagraph ORDER BY block DESC LIMIT 1")
        if row:
            row["neurons"] = json.loads(row["neurons"])
        return row

    def progress(self) -> dict[str, Any] | None:
        row = self._one("SELECT data, updated FROM progress WHERE id = 1")
        return {"data": json.loads(row["data"]), "updated": row["updated"]} if row else None

    # --- for the API (charts, rules, metrics) -------------------------------------
    def king_kl_series(self, limit: int = 2000) -> list[dict[str, Any]]:
        """The king's mean KL after each finished round (oldest first): the king's own row of that round."""
        rows = self._all(
            "SELECT r.id AS round_id, r.block, r.finished, e.hotkey, e.commit_block, e.mean_kl AS kl"
            " FROM rounds r JOIN evaluations e ON e.round_id = r.id AND e.hotkey = r.new_king_hotkey"
            " AND e.commit_block = r.new_king_block WHERE r.state = 'done' ORDER BY r.id DESC LIMIT ?",
            (max(1, int(limit)),),
        )
        return rows[::-1]

    def latest_rules(self) -> dict[str, Any] | None:
        """The rules of the newest round (what the validator judges by now), with its digest."""
        row = self._one("SELECT id AS round_id, rules, rules_digest FROM rounds ORDER BY id DESC LIMIT 1")
        if row:
            row["rules"] = json.loads(row["rules"])
        return row

    def stats(self, recent: int = 100) -> dict[str, Any]:
        """Counts for monitoring: submissions by status, rounds by state, recent round durations."""
        by_status = {r[0]: r[1] for r in self._db.execute("SELECT status, COUNT(*) FROM submissions GROUP BY status")}
        by_state = {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM rounds GROUP BY state")}
        durations = [
            r[0]
            for r in self._db.execute(
                "SELECT finished - started FROM rounds WHERE state = 'done' AND finished IS NOT NULL"
                " ORDER BY id DESC LIMIT ?",
                (max(1, int(recent)),),
            )
        ]
        model_errors = self._db.execute("SELECT COUNT(*) FROM evaluations WHERE status = 'model_error'").fetchone()[0]
        last_round = self._one("SELECT id, state, started, finished FROM rounds ORDER BY id DESC LIMIT 1")
        return {
            "submissions": by_status,
            "rounds": by_state,
            "durations": durations,
            "model_errors": model_errors,
            "last_round": last_round,
            "last_weights": self.last_weights(),
        }

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
