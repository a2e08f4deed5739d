"""The shipped claim catalogue, expanded, with the verdict each claim gets on the paper's own numbers.

``tests/data/catalogue_snapshot.json`` holds this for the catalogue as it was before claim kinds,
claim files and the paper's tables were reorganised (issue #11); ``test_catalogue_snapshot.py``
checks that the catalogue still expands to the same 96 claims (ids, fields, parsed parameters,
paper outcomes) and that ``--evidence paper`` still gives each the same result, numbers included.

Regenerate it only when a change to the catalogue or to an evaluation is intended, and say so in
the commit::

    PYTHONPATH=$PWD python tests/catalogue_snapshot.py    # rewrites tests/data/catalogue_snapshot.json
"""

from __future__ import annotations

import json
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parent / "data" / "catalogue_snapshot.json"


def catalogue_snapshot() -> dict:
    """{claim id: the claim's fields and its result under PaperEvidence}, in catalogue order."""
    from kdclaims.claims import load_claims
    from kdclaims.evaluate import PaperEvidence, evaluate_all
    from kdclaims.results import jsonable

    snapshot = {}
    for result in evaluate_all(load_claims(), PaperEvidence()):
        entry = result.to_dict()
        entry["file"] = Path(entry["file"]).name  # where the catalogue lives may change; which file may not
        snapshot[entry["id"]] = entry
    return json.loads(json.dumps(jsonable(snapshot)))  # as JSON would give it back: tuples become lists


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(catalogue_snapshot(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {SNAPSHOT}")
