"""Token prices and the exact integer scheme that turns them into metered session units.

Decision (issue 6, "money is exact ints"):

* Prices are integer **cents per million tokens** (the API's unit). pathUSD has 6 decimals, so one
  cent is 10^4 base units and a token at `p` cents/M costs `p × 10^4 / 10^6 = p / 100` base units:
  usually a fraction. Costs therefore accrue exactly in **hundredths of a base unit**
  (`prompt × input + completion × output`), never in floats.
* The session meter charges whole **units** (`unitType: "llm_token"`) at the challenge's `amount`,
  the per-token price in base units. The server picks one `unit_price` for the route (by default the
  output price per token of its most expensive provider, rounded up, at least 1 base unit).
* Before each token is sent, the meter is charged the whole units still due so that
  `units × unit_price ≥ accrued cost` (ceiling). A provider priced at exactly `unit_price` per
  output token therefore costs one unit per token; cheaper providers cost fewer units; the
  rounding never exceeds one unit per request and never under-charges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["BASE_UNITS_PER_CENT", "TOKENS_PER_PRICE", "Price", "UnitCursor", "default_unit_price"]

BASE_UNITS_PER_CENT: Final = 10**4  # pathUSD: 6 decimals
TOKENS_PER_PRICE: Final = 10**6  # prices are quoted per million tokens
_SCALE: Final = TOKENS_PER_PRICE // BASE_UNITS_PER_CENT  # = 100: cost is kept in 1/100 base units


@dataclass(frozen=True, slots=True)
class Price:
    """Integer cents per million input (prompt) and output (completion) tokens."""

    input_per_million: int
    output_per_million: int

    def __post_init__(self) -> None:
        for value in (self.input_per_million, self.output_per_million):
            if type(value) is not int or value < 0:
                raise ValueError("prices are non-negative integer cents per million tokens")

    @property
    def combined(self) -> int:
        """The combined rate used to compare providers (input + output, cents per million)."""
        return self.input_per_million + self.output_per_million

    def within(self, max_input: int, max_output: int) -> bool:
        return self.input_per_million <= max_input and self.output_per_million <= max_output

    def cost_centi_base_units(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Exact cost in hundredths of a base unit."""
        return prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million

    def base_units_per_token(self) -> tuple[str, str]:
        """(input, output) per token in base units, exact decimal strings ("1.5", "100")."""
        return _hundredths(self.input_per_million), _hundredths(self.output_per_million)

    def output_base_units_per_token(self) -> int:
        """The output price per token in base units, rounded up."""
        return -(-self.output_per_million // _SCALE)


def _hundredths(value: int) -> str:
    whole, frac = divmod(value, _SCALE)
    return str(whole) if frac == 0 else f"{whole}.{frac:02d}".rstrip("0")


def default_unit_price(prices: list[Price]) -> int:
    """The route's per-token `amount`: the highest output price per token, at least 1 base unit."""
    return max([1, *(p.output_base_units_per_token() for p in prices)])


class UnitCursor:
    """How many whole units are due so far for one completion (the ceiling rule above)."""

    __slots__ = ("charged_units", "price", "unit_price")

    def __init__(self, price: Price, unit_price: int) -> None:
        if type(unit_price) is not int or unit_price <= 0:
            raise ValueError("unit_price must be a positive int (base units per unit)")
        self.price = price
        self.unit_price = unit_price
        self.charged_units = 0

    def due(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Units to charge now so that the total covers this many tokens (0 if already covered)."""
        cost = self.price.cost_centi_base_units(prompt_tokens, completion_tokens)
        needed = -(-cost // (_SCALE * self.unit_price))
        return max(0, needed - self.charged_units)

    def record(self, units: int) -> None:
        self.charged_units += units

    @property
    def charged_base_units(self) -> int:
        return self.charged_units * self.unit_price
