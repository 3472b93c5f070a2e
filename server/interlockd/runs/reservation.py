"""What a run reserves against its spend budgets: its worst-case cost, before it starts.

Part of admission (runs/admission.py): the store holds the reservation from
the run's insert to its settlement (see ``store/base/budgets.py``), so the
number must never be less than one provider call can cost. It is the run's
output cap at the model's output price plus its input at the input price,
where the input is what the call can send: for a new conversation its system
prompt, tools and message; for one that goes on, the whole context window
left beside the output cap (the window assembly may fill it). Cached input is
priced as uncached, which only errs high.

A model the price table does not know costs nothing at settlement; a provider
may set ``estimate_usd_per_run`` so its runs still hold room while they run.
Tool rounds within a turn call the model again: a turn that used several can
cost more than it reserved, and is charged what it cost (the next admission
sees it).
"""

from __future__ import annotations

from interlockd.backends import catalog
from interlockd.context.tokens import MESSAGE_OVERHEAD, estimate_tokens
from interlockd.context.window import Budget
from interlockd.vocabulary import ModelInfo


def worst_case_usd(
    provider: str,
    model: str,
    info: ModelInfo,
    budget: Budget,
    max_output: int | None,
    *,
    message: str,
    new_conversation: bool,
    estimate_usd: float = 0.0,
) -> float:
    """The USD a run of ``model`` reserves (see the module docstring)."""
    price = catalog.price(provider, model)
    if price == catalog.FREE:
        return estimate_usd
    output = min(max_output or info.max_output_tokens, info.context_window // 2)
    window = info.context_window - output
    if new_conversation:
        # The budget's fixed part (system, tools, the dropped-turns note) and the message.
        fixed = window - budget.total
        window = min(window, fixed + estimate_tokens(message) + MESSAGE_OVERHEAD)
    return (window * price.input_per_mtok + output * price.output_per_mtok) / 1_000_000
