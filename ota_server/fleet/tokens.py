"""Operators' API tokens: roles, creation, and checking a presented token.

A token is ``ota_<id>_<secret>``: the id finds the row, the 256-bit secret is compared with
the stored sha256 in constant time (a random secret needs no slow hash: there is nothing to
guess). Only the digest is stored; the token is shown once, when it is created. Roles:

| role | may |
|---|---|
| read-only | read releases, vehicles, events, rollouts |
| fleet-operator | that, and assign releases and drive rollouts |
| release-manager | that, and what publishing needs |
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_server.errors import InputError
from ota_server.fleet.schema import Token

ROLES = ("read-only", "fleet-operator", "release-manager")
_TOKEN = re.compile(r"ota_([1-9][0-9]{0,17})_([A-Za-z0-9_-]{43})")


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` includes ``needed`` (each role includes the ones before it)."""
    return ROLES.index(role) >= ROLES.index(needed)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Operator:
    name: str
    role: str


async def create(session: AsyncSession, name: str, role: str, now: datetime) -> str:
    try:
        check_identifier("token name", name)
    except MetadataFormatError as e:
        raise InputError(str(e)) from None
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}")
    secret = secrets.token_urlsafe(32)
    try:
        result = await session.execute(
            insert(Token)
            .values(name=name, role=role, secret_sha256=_digest(secret), created_at=now)
            .returning(Token.id)
        )
    except IntegrityError:
        raise InputError(f"a token named {name} exists (revoke it first)") from None
    return f"ota_{result.scalar_one()}_{secret}"


async def listing(session: AsyncSession) -> list[Token]:
    return list((await session.execute(select(Token).order_by(Token.name))).scalars())


async def revoke(session: AsyncSession, name: str, now: datetime) -> None:
    result = await session.execute(
        update(Token).where(Token.name == name, Token.revoked_at.is_(None)).values(revoked_at=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InputError(f"no active token named {name}")


async def authenticate(session: AsyncSession, presented: str) -> Operator | None:
    """The operator a presented token belongs to; None for anything else."""
    match = _TOKEN.fullmatch(presented)
    if match is None:
        return None
    row = await session.get(Token, int(match.group(1)))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_sha256, _digest(match.group(2))):
        return None
    return Operator(row.name, row.role)
