"""The request bodies of the HTTP API, strict (unknown fields refused, every length capped)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlhfkit.collect.annotate.store import MAX_RESPONSES


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# SQLite integers are 64-bit: a larger id cannot name an item (and used to be an OverflowError).
ItemId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class LoginBody(_Body):
    # tokens are secrets.token_urlsafe(32): 43 characters of A-Z a-z 0-9 - _
    token: str = Field(min_length=1, max_length=200, pattern=r"^\s*[A-Za-z0-9_-]+\s*$")


class RankingBody(_Body):
    item_id: ItemId
    # best first; an inner list is a tie group
    ranking: list[str | Annotated[list[str], Field(max_length=MAX_RESPONSES)]] = Field(
        max_length=MAX_RESPONSES
    )
    # the client's id for this submission: sent again (a retry after a lost answer), the ranking
    # saved the first time is acknowledged instead of a 409
    request_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"
    )


class GoldBody(_Body):
    # best first; an inner list is a tie group
    ranking: list[str | Annotated[list[str], Field(max_length=MAX_RESPONSES)]] = Field(
        max_length=MAX_RESPONSES
    )
    note: str | None = Field(default=None, max_length=1000)


class SkipBody(_Body):
    item_id: ItemId
    reason: str = Field(min_length=1, max_length=500)


class FlagBody(_Body):
    item_id: ItemId
    reason: Literal["harmful", "broken", "spam", "other"]
    note: str | None = Field(default=None, max_length=1000)
