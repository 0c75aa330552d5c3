"""Reads and writes of output evidence (`autointerp.outputs.records.OutputEvidence`): one row per feature
of a run in `output_evidence`, token lists as lists of (token, token_id, value) structs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autointerp.outputs.records import OutputEvidence, TokenEffect
from autointerp.records import now
from autointerp.store.connection import StoreConnection

_LISTS = ("promoted", "suppressed", "steer_raised", "steer_lowered")


def _effects(items: Any) -> tuple[TokenEffect, ...]:
    return tuple(TokenEffect(str(i["token"]), int(i["token_id"]), float(i["value"])) for i in items or [])


def evidence_from_row(row: dict[str, Any]) -> OutputEvidence:
    """Returns the record of one `output_evidence` row."""
    return OutputEvidence(
        feature_id=str(row["feature_id"]),
        promoted=_effects(row["promoted"]),
        suppressed=_effects(row["suppressed"]),
        steer_raised=_effects(row["steer_raised"]),
        steer_lowered=_effects(row["steer_lowered"]),
        steer_scale=float(row["steer_scale"] or 0.0),
        steer_prompts=int(row["steer_prompts"] or 0),
        no_output_reason=row["no_output_reason"],
    )


def evidence_to_row(run_id: str, evidence: OutputEvidence) -> dict[str, Any]:
    """Returns the `output_evidence` row of one record."""
    row: dict[str, Any] = {"run_id": run_id, "feature_id": evidence.feature_id}
    for name in _LISTS:
        row[name] = [{"token": e.token, "token_id": e.token_id, "value": e.value} for e in getattr(evidence, name)]
    row.update(
        steer_scale=evidence.steer_scale,
        steer_prompts=evidence.steer_prompts,
        no_output_reason=evidence.no_output_reason,
        created_at=now(),
    )
    return row


class OutputEvidenceStore(StoreConnection):
    """The `output_evidence` table."""

    def write_output_evidence(self, run_id: str, items: Sequence[OutputEvidence]) -> int:
        """Stores (or replaces) the output evidence of each feature in `items`, in one transaction; returns
        how many rows were written. Writing the same features again leaves one row per feature."""
        if not items:
            return 0
        with self.transaction() as con:
            con.execute(
                "DELETE FROM output_evidence WHERE run_id = ? AND feature_id IN (SELECT unnest(?::VARCHAR[]))",
                [run_id, [e.feature_id for e in items]],
            )
            return self.insert_rows(con, "output_evidence", [evidence_to_row(run_id, e) for e in items])

    def output_evidence(self, run_id: str, feature_id: str) -> OutputEvidence | None:
        """Returns the output evidence of one feature of the run, or None when none is stored."""
        rows = self.query("SELECT * FROM output_evidence WHERE run_id = ? AND feature_id = ?", [run_id, feature_id])
        return evidence_from_row(rows[0]) if rows else None

    def output_evidence_by_feature(self, run_id: str) -> dict[str, OutputEvidence]:
        """Returns feature id -> output evidence of every feature of the run that has some stored."""
        rows = self.query("SELECT * FROM output_evidence WHERE run_id = ? ORDER BY feature_id", [run_id])
        return {str(r["feature_id"]): evidence_from_row(r) for r in rows}

    def output_evidence_ids(self, run_id: str) -> set[str]:
        """Returns the ids of the run's features whose output evidence is stored (what a resume skips)."""
        rows = self.query("SELECT feature_id FROM output_evidence WHERE run_id = ?", [run_id])
        return {str(r["feature_id"]) for r in rows}
