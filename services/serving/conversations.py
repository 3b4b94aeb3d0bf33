"""Conversations of the Responses API: each stored answer keeps the messages that led to it (PostgreSQL).

`previous_response_id` continues a stored conversation from any replica, after
restarts; only the principal who made it may continue it (others get NOT_FOUND,
as for a response that does not exist).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from psycopg.types.json import Jsonb

from services.common.auth import Principal
from services.common.db import Database
from services.common.errors import NotFound

Message = dict[str, str]


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def messages(self, response_id: str, principal: Principal) -> list[Message]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT messages FROM responses WHERE id = %s AND principal = %s", (response_id, principal.name)
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"response {response_id!r} does not exist")
        messages = row[0]
        return json.loads(messages) if isinstance(messages, str) else list(messages)

    async def save(self, response_id: str, endpoint: str, principal: Principal, messages: Sequence[Message]) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO responses (id, endpoint, principal, messages) VALUES (%s, %s, %s, %s)",
                (response_id, endpoint, principal.name, Jsonb(list(messages))),
            )
