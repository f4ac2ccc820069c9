"""Reads and writes of conversations and messages: SQL in, plain `models` out.

Tenancy is enforced here: every read names the tenant, so a row of another tenant is
simply not found.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from chatrelay.clock import now_iso
from chatrelay.errors import NotFound
from chatrelay.ids import new_id
from chatrelay.json_values import dumps_fast, loads_lenient
from chatrelay.models import Conversation, Message, PartialText, PieceKind, Status, scrub_nul
from chatrelay.storage.database import Database, Row, Unit

_MESSAGE_COLUMNS = (
    "id, conversation_id, tenant, seq, role, content, status, finish_reason, model, usage, "
    "error, reasoning, refusal, tool_calls, params, pieces, created_at, updated_at, completed_at, "
    "superseded_by"
)


def _insert_message_sql(clock_sql: str) -> str:
    """The insert of a message; a `streaming` one gets its owner and a first lease."""
    return (
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}, owner, lease_expires_at) VALUES ("
        + ", ".join(":" + c.strip() for c in _MESSAGE_COLUMNS.split(","))
        + f", :owner, {clock_sql} + CAST(:lease_ttl AS DOUBLE PRECISION))"
    )


_INTERRUPTED_ERROR = "interrupted"  # the code `replay.was_recovered` recognises
_TEXT_FIELDS = ("content", "reasoning", "refusal", "model")
_FINAL_FIELDS = frozenset(
    [
        "id",
        "content",
        "status",
        "finish_reason",
        "model",
        "usage",
        "error",
        "reasoning",
        "refusal",
        "tool_calls",
        "pieces",
        "updated_at",
        "completed_at",
    ]
)


def _dumps(value: Any) -> str | None:
    """Stored JSON via orjson (the standard library for what orjson refuses); either way
    compact, and a non-finite number becomes `null` (`json_values.dumps_fast`)."""
    return None if value is None else dumps_fast(value)


def _loads(value: str | None) -> Any:
    # Lenient: rows stored before non-finite numbers were refused read with `null` there.
    return None if value is None else loads_lenient(value)


def _conversation(row: Row) -> Conversation:
    return Conversation(
        id=row["id"],
        tenant=row["tenant"],
        title=row["title"],
        system_prompt=row["system_prompt"],
        model=row["model"],
        metadata=_loads(row["metadata"]) or {},
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _message(row: Row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        tenant=row["tenant"],
        seq=int(row["seq"]),
        role=row["role"],
        content=row["content"],
        status=Status(row["status"]),
        model=row["model"],
        created_at=row["created_at"],
        finish_reason=row["finish_reason"],
        usage=_loads(row["usage"]),
        error=_loads(row["error"]),
        completed_at=row["completed_at"],
        reasoning=row["reasoning"],
        refusal=row["refusal"],
        tool_calls=_loads(row["tool_calls"]),
        params=_loads(row["params"]) or {},
        pieces=[(PieceKind(kind), int(length)) for kind, length in (_loads(row["pieces"]) or [])],
        superseded_by=row["superseded_by"],
    )


def _message_values(message: Message, updated_at: str) -> dict[str, Any]:
    values = _raw_message_values(message, updated_at)
    for name in _TEXT_FIELDS:
        if values[name] is not None:
            values[name] = scrub_nul(values[name])
    return values


def _raw_message_values(message: Message, updated_at: str) -> dict[str, Any]:
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "tenant": message.tenant,
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "status": str(message.status),
        "finish_reason": message.finish_reason,
        "model": message.model,
        "usage": _dumps(message.usage),
        "error": _dumps(message.error),
        "reasoning": message.reasoning,
        "refusal": message.refusal,
        "tool_calls": _dumps(message.tool_calls),
        "params": _dumps(message.params) or "{}",
        "pieces": dumps_fast(message.pieces),
        "created_at": message.created_at,
        "updated_at": updated_at,
        "completed_at": message.completed_at,
        "superseded_by": message.superseded_by,
    }


def message_record(message: Message) -> dict[str, Any]:
    """A message as a JSON-ready record (the spool's format)."""
    return _message_values(message, now_iso())


def message_from_record(record: dict[str, Any]) -> Message:
    return _message(record)


# Offered a turn's history newest first (the user message of the turn included); returns
# False once it wants no older message. Built from the conversation read in the same
# transaction (its system prompt counts against the budget).
HistoryOffer = Callable[[Message], bool]

# Messages per read of a turn's history: the first page is small (most contexts fit in
# it), and each further one twice the last, up to a cap, so a large budget needs few reads
# and a small one reads at most about twice what it keeps.
HISTORY_PAGE = 50
HISTORY_PAGE_MAX = 1000


@dataclass(frozen=True)
class Turn:
    """A stored turn, with the conversation it belongs to."""

    conversation: Conversation
    user: Message | None
    assistant: Message
    replaced_running: list[Running] = field(default_factory=list)  # superseded, still streaming


@dataclass(frozen=True)
class Running:
    """A message that was still `streaming`, and the instance that generates it."""

    message_id: str
    owner: str | None


class OrphanScope(StrEnum):
    """Which `streaming` messages `interrupt_orphans` closes."""

    ALL = "all"  # one instance per database: whatever is streaming at start-up was left
    EXPIRED_OR_UNLEASED = "expired_or_unleased"  # start-up beside other instances
    EXPIRED = "expired"  # the periodic sweep: only leases that ran out


class Repository:
    """`instance_id` owns the `streaming` messages this process inserts; each starts with
    a lease of `lease_ttl` s (renewed by `renew_leases`). Without one, no lease is set."""

    def __init__(
        self, db: Database, *, instance_id: str | None = None, lease_ttl: float = 30.0
    ) -> None:
        self.db = db
        self.instance_id = instance_id
        self.lease_ttl = lease_ttl
        self._insert_message = _insert_message_sql(db.clock_sql)

    def _insert_values(self, message: Message, now: str) -> dict[str, Any]:
        values = _message_values(message, now)
        leased = message.status is Status.STREAMING and self.instance_id is not None
        values["owner"] = self.instance_id if leased else None
        values["lease_ttl"] = self.lease_ttl if leased else None
        return values

    # -- conversations ---------------------------------------------------------------

    async def create_conversation(
        self,
        *,
        tenant: str,
        title: str | None,
        system_prompt: str | None,
        model: str | None,
        metadata: dict[str, Any],
        messages: Sequence[Message] = (),
    ) -> tuple[Conversation, list[Message]]:
        """A new conversation, already holding `messages` (seq 1…n) if any, in one transaction.

        One trip instead of two for an OpenAI-style request recorded in a new
        conversation: the time it saves is time before the first token.
        """
        conversation, stored = self.new_conversation(
            tenant=tenant,
            title=title,
            system_prompt=system_prompt,
            model=model,
            metadata=metadata,
            messages=messages,
        )
        await self.insert_conversation(conversation, stored)
        return conversation, stored

    @staticmethod
    def new_conversation(
        *,
        tenant: str,
        title: str | None,
        system_prompt: str | None,
        model: str | None,
        metadata: dict[str, Any],
        messages: Sequence[Message] = (),
    ) -> tuple[Conversation, list[Message]]:
        """What `create_conversation` stores, not stored yet: the conversation and its
        messages numbered 1…n, with their ids (a generation can start before the insert)."""
        now = now_iso()
        conversation = Conversation(
            id=new_id("conv"),
            tenant=tenant,
            title=title,
            system_prompt=system_prompt,
            model=model,
            metadata=metadata,
            created_at=now,
            updated_at=now,
        )
        stored = [
            m.evolve(conversation_id=conversation.id, tenant=tenant, seq=i + 1)
            for i, m in enumerate(messages)
        ]
        return conversation, stored

    async def insert_conversation(
        self, conversation: Conversation, messages: list[Message]
    ) -> None:
        """Store what `new_conversation` made, in one transaction."""
        now = conversation.created_at
        title, system_prompt, model = (
            conversation.title,
            conversation.system_prompt,
            conversation.model,
        )
        async with self.db.unit(transaction=bool(messages)) as unit:
            await unit.execute(
                "INSERT INTO conversations (id, tenant, title, system_prompt, model, metadata, "
                "next_seq, created_at, updated_at) VALUES (:id, :tenant, :title, :system_prompt, "
                ":model, :metadata, :next_seq, :created_at, :updated_at)",
                {
                    "id": conversation.id,
                    "tenant": conversation.tenant,
                    "title": None if title is None else scrub_nul(title),
                    "system_prompt": None if system_prompt is None else scrub_nul(system_prompt),
                    "model": None if model is None else scrub_nul(model),
                    "metadata": _dumps(conversation.metadata),
                    "next_seq": len(messages),
                    "created_at": now,
                    "updated_at": now,
                },
            )
            await unit.execute_many(
                self._insert_message, [self._insert_values(m, now) for m in messages]
            )

    async def get_conversation(self, tenant: str, conversation_id: str) -> Conversation:
        async with self.db.unit() as unit:
            row = await unit.fetch_one(
                "SELECT * FROM conversations WHERE id = :id AND tenant = :tenant",
                {"id": conversation_id, "tenant": tenant},
            )
        if row is None:
            raise NotFound(f"conversation {conversation_id} not found")
        return _conversation(row)

    async def list_conversations(
        self, tenant: str, *, limit: int, before: str | None
    ) -> tuple[list[Conversation], str | None]:
        """Newest first; `before` is the last id of the previous page."""
        sql = "SELECT * FROM conversations WHERE tenant = :tenant"
        values: dict[str, Any] = {"tenant": tenant, "limit": limit + 1}
        if before is not None:
            sql += " AND id < :before"
            values["before"] = before
        sql += " ORDER BY id DESC LIMIT :limit"
        async with self.db.unit() as unit:
            rows = await unit.fetch_all(sql, values)
        conversations = [_conversation(r) for r in rows[:limit]]
        next_cursor = conversations[-1].id if len(rows) > limit else None
        return conversations, next_cursor

    async def delete_conversation(self, tenant: str, conversation_id: str) -> list[Running]:
        """Delete it and its messages; returns those that were still streaming, so that
        their generations (here or on another instance) can be stopped."""
        async with self.db.unit(transaction=True) as unit:
            row = await unit.fetch_one(
                "SELECT id FROM conversations WHERE id = :id AND tenant = :tenant",
                {"id": conversation_id, "tenant": tenant},
            )
            if row is None:
                raise NotFound(f"conversation {conversation_id} not found")
            rows = await unit.fetch_all(
                "DELETE FROM messages WHERE conversation_id = :id RETURNING id, owner, status",
                {"id": conversation_id},
            )
            await unit.execute("DELETE FROM conversations WHERE id = :id", {"id": conversation_id})
        return [Running(r["id"], r["owner"]) for r in rows if r["status"] == "streaming"]

    # -- messages --------------------------------------------------------------------

    async def delete_message(self, tenant: str, message_id: str) -> None:
        """One message gone from reads and lists (`DELETE /v1/responses/{id}`)."""
        async with self.db.unit() as unit:
            row = await unit.fetch_one(
                "DELETE FROM messages WHERE id = :id AND tenant = :tenant RETURNING id",
                {"id": message_id, "tenant": tenant},
            )
        if row is None:
            raise NotFound(f"message {message_id} not found")

    async def add_turn(
        self,
        *,
        tenant: str,
        conversation_id: str,
        user_content: str | None,
        choose_model: Callable[[Conversation], str],
        params: dict[str, Any],
        supersede_from: int | None = None,
        history: Callable[[Conversation], HistoryOffer] | None = None,
        prepared: Callable[[Turn], None] | None = None,
    ) -> Turn:
        """Store the next turn: a user message (unless regenerating) and a `streaming` reply.

        One transaction does it all, and reads what generation needs: the conversation,
        and the active history up to the reply, newest first and page by page, offered to
        `history(conversation)` until it wants no more (the context budget is full), so a
        long conversation is not read whole. Sequence numbers come from an atomic
        increment on the conversation row, so two concurrent posts never collide, on
        SQLite or PostgreSQL. With `supersede_from`, every active message from that
        position on leaves the context (edit/regenerate). `choose_model` names the reply's
        model from the conversation read in the same statement (the service's rule).
        `prepared(turn)` is called once the history is read and before the messages are
        written (a generation can start then, gated: `Generation` says why).
        """
        now = now_iso()
        count = 2 if user_content is not None else 1
        async with self.db.unit(transaction=True) as unit:
            row = await unit.fetch_one(
                "UPDATE conversations SET next_seq = next_seq + :count, updated_at = :now "
                "WHERE id = :id AND tenant = :tenant RETURNING *",
                {"id": conversation_id, "tenant": tenant, "now": now, "count": count},
            )
            if row is None:
                raise NotFound(f"conversation {conversation_id} not found")
            conversation = _conversation(row)
            model = choose_model(conversation)
            last = int(row["next_seq"])
            user = None
            if user_content is not None:
                user = Message(
                    id=new_id("msg"),
                    conversation_id=conversation_id,
                    tenant=tenant,
                    seq=last - 1,
                    role="user",
                    content=scrub_nul(user_content),
                    status=Status.COMPLETED,
                    model=None,
                    created_at=now,
                    completed_at=now,
                )
            assistant = Message(
                id=new_id("msg"),
                conversation_id=conversation_id,
                tenant=tenant,
                seq=last,
                role="assistant",
                content="",
                status=Status.STREAMING,
                model=model,
                created_at=now,
                params=params,
            )
            replaced: list[Running] = []
            if supersede_from is not None:
                rows = await unit.fetch_all(
                    "UPDATE messages SET superseded_by = :by, updated_at = :now "
                    "WHERE conversation_id = :cid AND seq >= :seq AND seq < :first_new "
                    "AND superseded_by IS NULL RETURNING id, owner, status",
                    {
                        "by": (user or assistant).id,
                        "now": now,
                        "cid": conversation_id,
                        "seq": supersede_from,
                        "first_new": last - count + 1,
                    },
                )
                replaced = [
                    Running(row["id"], row["owner"]) for row in rows if row["status"] == "streaming"
                ]
            if history is not None:
                offer = history(conversation)
                # The turn's own user message is the newest offered; it is not written yet.
                wanted = user is None or offer(user)
                before = user.seq if user is not None else assistant.seq
                size = HISTORY_PAGE
                while wanted:
                    page = await self._history_page(unit, conversation_id, before, size)
                    if not all(offer(m) for m in page) or len(page) < size:
                        break
                    before = page[-1].seq
                    size = min(size * 2, HISTORY_PAGE_MAX)
            turn = Turn(conversation, user, assistant, replaced)
            if prepared is not None:
                prepared(turn)
            await unit.execute_many(
                self._insert_message,
                [self._insert_values(m, now) for m in (user, assistant) if m is not None],
            )
        return turn

    async def _history_page(
        self, unit: Unit, conversation_id: str, before: int, size: int
    ) -> list[Message]:
        """Up to `size` active messages before `before`, newest first: one indexed range
        read on `(conversation_id, seq)`."""
        rows = await unit.fetch_all(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = :id "
            "AND seq < :before AND superseded_by IS NULL ORDER BY seq DESC LIMIT :limit",
            {"id": conversation_id, "before": before, "limit": size},
        )
        return [_message(r) for r in rows]

    async def messages_page(
        self, conversation_id: str, *, after_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to `limit` messages after `after_seq` in `seq` order, and whether more follow."""
        async with self.db.unit() as unit:
            rows = await unit.fetch_all(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = :id "
                "AND seq > :after ORDER BY seq LIMIT :limit",
                {"id": conversation_id, "after": after_seq or 0, "limit": limit + 1},
            )
        return [_message(r) for r in rows[:limit]], len(rows) > limit

    async def latest_messages(
        self, conversation_id: str, *, limit: int
    ) -> tuple[list[Message], bool]:
        """The newest `limit` messages in `seq` order, and whether older ones were left out."""
        async with self.db.unit() as unit:
            rows = await unit.fetch_all(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = :id "
                "ORDER BY seq DESC LIMIT :limit",
                {"id": conversation_id, "limit": limit + 1},
            )
        newest = [_message(r) for r in rows[:limit]]
        newest.reverse()
        return newest, len(rows) > limit

    async def list_messages(self, conversation_id: str) -> list[Message]:
        async with self.db.unit() as unit:
            rows = await unit.fetch_all(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = :id ORDER BY seq",
                {"id": conversation_id},
            )
        return [_message(r) for r in rows]

    async def get_message(self, tenant: str, message_id: str) -> Message:
        """One of the tenant's messages; another tenant's is `NotFound`, like a missing one."""
        async with self.db.unit() as unit:
            row = await unit.fetch_one(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = :id AND tenant = :tenant",
                {"id": message_id, "tenant": tenant},
            )
        if row is None:
            raise NotFound(f"message {message_id} not found")
        return _message(row)

    async def checkpoint(self, messages: Sequence[PartialText | Message]) -> None:
        """Save partial text of streaming messages; a finished message is never overwritten."""
        now = now_iso()
        async with self.db.unit(transaction=True) as unit:
            await unit.execute_many(
                "UPDATE messages SET content = :content, reasoning = :reasoning, "
                "tool_calls = :tool_calls, pieces = :pieces, updated_at = :now "
                "WHERE id = :id AND status = 'streaming'",
                [
                    {
                        "id": m.id,
                        "content": scrub_nul(m.content),
                        "reasoning": None if m.reasoning is None else scrub_nul(m.reasoning),
                        "tool_calls": _dumps(m.tool_calls),
                        "pieces": dumps_fast(m.pieces),
                        "now": now,
                    }
                    for m in messages
                ],
            )

    async def finalize(self, *messages: Message) -> None:
        """Write final states, all in one transaction (a group commit under load).

        Idempotent: the write applies only to a row still `streaming`, so a retry, a
        spool replay or a row already gone (conversation deleted) changes nothing.
        """
        now = now_iso()
        async with self.db.unit(transaction=len(messages) > 1) as unit:
            await unit.execute_many(
                "UPDATE messages SET content = :content, status = :status, "
                "finish_reason = :finish_reason, model = :model, usage = :usage, "
                "error = :error, reasoning = :reasoning, refusal = :refusal, "
                "tool_calls = :tool_calls, pieces = :pieces, updated_at = :updated_at, "
                "completed_at = :completed_at WHERE id = :id AND status = 'streaming'",
                [
                    {k: v for k, v in _message_values(m, now).items() if k in _FINAL_FIELDS}
                    for m in messages
                ],
            )

    async def owner_of(
        self, tenant: str, message_id: str, *, streaming_only: bool = False
    ) -> str | None:
        """The instance generating (or that generated) the tenant's message, if recorded."""
        sql = "SELECT owner FROM messages WHERE id = :id AND tenant = :tenant"
        if streaming_only:
            sql += " AND status = 'streaming'"
        async with self.db.unit() as unit:
            row = await unit.fetch_one(sql, {"id": message_id, "tenant": tenant})
        return None if row is None else row["owner"]

    async def renew_leases(self) -> None:
        """Extend the lease of every message this instance is still generating: one
        statement however many there are."""
        if self.instance_id is None:
            return
        async with self.db.unit() as unit:
            await unit.execute(
                f"UPDATE messages SET lease_expires_at = {self.db.clock_sql} "
                "+ CAST(:ttl AS DOUBLE PRECISION) WHERE owner = :owner AND status = 'streaming'",
                {"ttl": self.lease_ttl, "owner": self.instance_id},
            )

    async def expired_owners(self) -> set[str]:
        """The instances recorded as generating a `streaming` message whose lease expired."""
        async with self.db.unit() as unit:
            rows = await unit.fetch_all(
                "SELECT DISTINCT owner FROM messages WHERE status = 'streaming' "
                f"AND owner IS NOT NULL AND lease_expires_at < {self.db.clock_sql}",
                {},
            )
        return {str(r["owner"]) for r in rows}

    async def interrupt_orphans(
        self, scope: OrphanScope, reason: str, *, spare: Collection[str] = ()
    ) -> list[Message]:
        """Close `streaming` messages nobody generates any more as `interrupted`, keeping
        their last checkpoint; returns them as closed. Messages of the `spare` owners are
        left alone whatever their lease says (they are known to be alive).

        One conditional UPDATE: a lease renewed a moment ago no longer matches, so a live
        owner is never overruled (PostgreSQL re-checks the condition on a row it waited for).
        """
        condition = "status = 'streaming'"
        expired = f"lease_expires_at < {self.db.clock_sql}"
        if scope is OrphanScope.EXPIRED:
            condition += f" AND {expired}"
        elif scope is OrphanScope.EXPIRED_OR_UNLEASED:
            condition += f" AND (lease_expires_at IS NULL OR {expired})"
        values: dict[str, Any] = {
            "error": _dumps({"code": _INTERRUPTED_ERROR, "message": reason}),
            "now": now_iso(),
        }
        spared = sorted(spare)
        if spared:
            names = [f":spare{i}" for i in range(len(spared))]
            condition += f" AND (owner IS NULL OR owner NOT IN ({', '.join(names)}))"
            values.update({f"spare{i}": owner for i, owner in enumerate(spared)})
        async with self.db.unit() as unit:
            rows = await unit.fetch_all(
                "UPDATE messages SET status = 'interrupted', error = :error, "
                f"completed_at = :now, updated_at = :now WHERE {condition} "
                f"RETURNING {_MESSAGE_COLUMNS}",
                values,
            )
        return [_message(r) for r in rows]

    async def append_messages(
        self, tenant: str, conversation_id: str, messages: Sequence[Message]
    ) -> list[Message]:
        """Store `messages` as the conversation's next turns, in order, in one transaction.

        Ids and contents are the caller's; the sequence numbers come from the same atomic
        counter as `add_turn`, so concurrent writers never collide. Returns the messages as
        stored.
        """
        now = now_iso()
        async with self.db.unit(transaction=True) as unit:
            row = await unit.fetch_one(
                "UPDATE conversations SET next_seq = next_seq + :count, updated_at = :now "
                "WHERE id = :id AND tenant = :tenant RETURNING next_seq",
                {"id": conversation_id, "tenant": tenant, "now": now, "count": len(messages)},
            )
            if row is None:
                raise NotFound(f"conversation {conversation_id} not found")
            first = int(row["next_seq"]) - len(messages) + 1
            stored = [
                m.evolve(conversation_id=conversation_id, tenant=tenant, seq=first + i)
                for i, m in enumerate(messages)
            ]
            await unit.execute_many(
                self._insert_message, [self._insert_values(m, now) for m in stored]
            )
        return stored
