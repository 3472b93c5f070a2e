"""Token estimates for context budgeting.

The router budgets context for models whose tokenizers it doesn't have (and
can't download). The estimate is deliberately conservative — one token per
three bytes of UTF-8 plus a per-message overhead — so assembled context stays
within a model's window even for tokenizers that are less efficient on the
text at hand. Providers report the real counts in usage; those go to the
ledger, not this.
"""

from __future__ import annotations

#: Tokens a chat template spends around each message (role markers, separators).
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """Conservative token count of ``text`` (without message overhead)."""
    return (len(text.encode("utf-8")) + 2) // 3
