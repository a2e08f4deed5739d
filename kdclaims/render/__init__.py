"""Everything a reader sees: the report document and its formats.

``document`` builds the one report dict from a saved evaluation; ``markdown``, ``html``, ``terminal``,
``csvfile`` and ``figures`` render it; ``format`` is the one place where numbers, p-values, verdicts,
outcomes and labels are written, for every format alike.
"""
