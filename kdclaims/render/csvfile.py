"""The report as CSV: one row per claim, and one row per trained member. CSV is data: numbers keep
their full precision (n as integers); the verdict is in words as every report writes it, with its id
("not_reproduced") in ``verdict_id`` for programs."""

from __future__ import annotations

import pandas as pd

from kdclaims.render.document import claims_frame


def claims_csv(document: dict) -> str:
    return claims_frame(document).to_csv(index=False)


def members_csv(document: dict) -> str:
    return pd.DataFrame(document["members"]).to_csv(index=False)
