"""The report as CSV: one row per claim, one row per trained member, and (--sequential) one row per look of
each claim. CSV is data: numbers keep their full precision (n as integers); the verdict is in words as every
report writes it, with its id ("not_reproduced") in ``verdict_id`` for programs."""

from __future__ import annotations

import pandas as pd

from kdclaims.render.document import claims_frame, looks_frame


def claims_csv(document: dict) -> str:
    return claims_frame(document).to_csv(index=False)


def looks_csv(document: dict) -> str | None:
    """A --sequential run's looks, one row per look of each claim (``looks_frame``); None for a fixed-design run."""
    return looks_frame(document).to_csv(index=False) if document.get("sequential") else None


def members_csv(document: dict) -> str:
    return pd.DataFrame(document["members"]).to_csv(index=False)
