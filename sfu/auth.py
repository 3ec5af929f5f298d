"""Signed join tokens: JWT (RFC 7519) with HS256, via PyJWT.

A backend issues a token for one identity in one room with a role and an
expiry; the room checks it on join before any state is created::

    token = sfu.auth.issue_token(secret, room="town-hall", identity="alice", role="speaker", ttl=600)
    claims = sfu.auth.verify_token(secret, token, room="town-hall")

Claims: ``sub`` (identity), ``room``, ``role``, ``grants`` (list of
``publish``/``subscribe``/``moderate``), ``iat``, ``nbf``, ``exp`` and a
random ``jti`` (so one token can be banned without banning the person).
Every failure of a token raises :class:`sfu.errors.NotAllowed` with the
reason: :class:`sfu.errors.InvalidToken` (a subclass) when the token itself
is bad (malformed, expired, not signed with the key; for a malformed one
the message says what is wrong in its shape: its parts, their base64url or
JSON, its ``alg``, a claim of the wrong type), a plain ``NotAllowed``
when there is none or a good token is for another room (a secret shorter than 32 bytes is the server's mistake:
:class:`sfu.errors.InvalidSetting`).

``subscribe`` is implied: every member of a room may listen (a room's
audio is what joining it is for); ``publish`` and ``moderate`` are the
grants the server enforces.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_decode, base64url_encode

from ._values import brief, is_number, is_seconds
from .errors import InvalidSetting, InvalidToken, NotAllowed

__all__ = [
    "GRANTS",
    "ROLES",
    "Claims",
    "Grant",
    "Role",
    "grants_of",
    "issue_token",
    "signed_identity",
    "verify_token",
]

Role = Literal["moderator", "speaker", "listener"]
Grant = Literal["publish", "subscribe", "moderate"]

#: What each role may do.
ROLES: dict[str, frozenset[Grant]] = {
    "moderator": frozenset({"publish", "subscribe", "moderate"}),
    "speaker": frozenset({"publish", "subscribe"}),
    "listener": frozenset({"subscribe"}),
}
GRANTS: frozenset[Grant] = frozenset({"publish", "subscribe", "moderate"})
ALGORITHM = "HS256"
#: Longer tokens are refused unread (a join token is a few hundred bytes).
MAX_TOKEN_LENGTH = 8192
#: Clock skew tolerated between the issuing backend and the server (seconds).
DEFAULT_LEEWAY = 5.0
MIN_SECRET_BYTES = 32
#: Longest room name and identity (the room refuses longer ones too).
MAX_NAME_LENGTH = 256


@dataclass(frozen=True)
class Claims:
    """The verified content of a join token."""

    room: str
    identity: str
    role: Role
    grants: frozenset[Grant]
    expires: float
    token_id: str


def grants_of(role: str) -> frozenset[Grant]:
    """What ``role`` may do; raises :class:`InvalidSetting` for an unknown role."""
    grants = ROLES.get(role) if isinstance(role, str) else None
    if grants is None:
        raise InvalidSetting(f"role must be one of {sorted(ROLES)}, got {role!r}")
    return grants


def check_secret(secret: str | bytes) -> bytes:
    """The HMAC key of ``secret``; :class:`~sfu.errors.InvalidSetting` if it
    is too short, or is a public/private key or certificate (PEM, SSH, DER),
    which PyJWT refuses as an HS256 secret at every token."""
    key = _key(secret)
    try:
        _HS256.prepare_key(key)
    except jwt.InvalidKeyError:
        raise InvalidSetting(_NOT_A_SECRET) from None
    return key


#: Why a key PyJWT refuses as an HMAC secret is refused here too.
_NOT_A_SECRET = (
    "a token secret must be random bytes, not a public or private key or a certificate"
    " (PEM, SSH or DER): HS256 tokens are signed with a shared secret"
)


def _key(secret: str | bytes) -> bytes:
    try:
        key = secret.encode() if isinstance(secret, str) else secret
    except UnicodeEncodeError:  # a lone surrogate: no bytes to sign with
        raise InvalidSetting("a token secret given as str must encode as UTF-8") from None
    if not isinstance(key, bytes):
        raise InvalidSetting(
            f"a token secret is a str or bytes of at least {MIN_SECRET_BYTES} bytes,"
            f" got {type(secret).__name__}"
        )
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidSetting(
            f"a token secret must be at least {MIN_SECRET_BYTES} bytes (HS256 keys shorter than the hash are weak)"
        )
    return key


def issue_token(
    secret: str | bytes,
    *,
    room: str,
    identity: str,
    role: Role = "listener",
    ttl: float = 3600.0,
    grants: Iterable[Grant] | None = None,
    not_before: float | None = None,
    now: float | None = None,
) -> str:
    """A signed token letting ``identity`` join ``room`` as ``role`` for ``ttl`` seconds.

    ``grants`` narrows or widens what the role implies (for example a
    listener allowed to moderate); by default it is the role's grants.
    Raises :class:`~sfu.errors.InvalidSetting` for a secret shorter than 32
    bytes, an empty or over-long ``room`` or ``identity``, an unknown
    ``role`` or grant, a ``ttl`` that is not a positive number, or a
    ``not_before`` at or past the token's end. The end is rounded up to a
    whole second (the token lives at least ``ttl``).
    """
    if not isinstance(room, str) or not room or len(room) > MAX_NAME_LENGTH:
        raise InvalidSetting(
            f"room must be a non-empty string of at most {MAX_NAME_LENGTH} characters"
        )
    if not isinstance(identity, str) or not identity or len(identity) > MAX_NAME_LENGTH:
        raise InvalidSetting(
            f"identity must be a non-empty string of at most {MAX_NAME_LENGTH} characters"
        )
    grants_of(role)  # InvalidSetting unless one of ROLES
    for name, seconds in (("ttl", ttl), ("not_before", not_before), ("now", now)):
        if seconds is not None and not is_seconds(seconds):
            raise InvalidSetting(f"{name} must be a finite number of seconds, got {brief(seconds)}")
    if ttl is None or ttl <= 0:
        raise InvalidSetting(f"ttl must be a positive number of seconds, got {brief(ttl)}")
    if isinstance(grants, (str, bytes)):
        raise InvalidSetting(f"grants must be a list of grant names, got the string {grants!r}")
    try:
        granted = grants_of(role) if grants is None else frozenset(grants)
    except TypeError:  # not iterable, or an item that is not hashable (a list)
        raise InvalidSetting(
            f"grants must be an iterable of grant names, got {grants!r:.60}"
        ) from None
    unknown = granted - GRANTS
    if unknown:
        # (sorted by their text: a misspelt name beside an int must not raise TypeError)
        raise InvalidSetting(f"unknown grants {sorted(unknown, key=repr)}; known: {sorted(GRANTS)}")
    # As Python floats: numpy's own arithmetic on a narrow scalar (float32,
    # int32) would lose the ttl or wrap past 2**31.
    issued = time.time() if now is None else float(now)
    # Whole seconds (RFC 7519 NumericDate as PyJWT writes it): the end rounded
    # up, so that a token lives at least ttl, and one of 0.5 s is not dead at issue.
    expires = issued + float(ttl)
    starts = issued if not_before is None else float(not_before)
    if not math.isfinite(expires):
        raise InvalidSetting(f"now + ttl must be a finite time, got {brief(expires)}")
    if starts >= math.ceil(expires):
        if not_before is None:
            raise InvalidSetting(f"ttl {brief(ttl)} is too short: the token would end as it starts")
        raise InvalidSetting(
            f"not_before ({brief(starts)}) is not before the token expires ({brief(expires)}):"
            " it could never be used"
        )
    payload = {
        "sub": identity,
        "room": room,
        "role": role,
        "grants": sorted(granted),
        "iat": int(issued),
        "nbf": int(starts),
        "exp": math.ceil(expires),
        "jti": secrets.token_urlsafe(12),
    }
    try:
        return jwt.encode(payload, _key(secret), algorithm=ALGORITHM)
    except jwt.InvalidKeyError:
        raise InvalidSetting(_NOT_A_SECRET) from None


#: PyJWT's own HS256 (the ALGORITHM tokens are signed with), for the quick look.
_HS256 = HMACAlgorithm(HMACAlgorithm.SHA256)


def signed_identity(secret: str | bytes, token: str, *, room: str) -> str | None:
    """The identity (``sub``) a token for ``room`` names, if its HS256
    signature is ``secret``'s; None otherwise. Never raises.

    A quick look (HMAC-SHA256 and a JSON read, a few µs; PyJWT's whole check
    is ~80 µs) for a caller that must know whom a join is for before the
    join's own check runs, which :func:`verify_token` is (the header, the
    times, every claim): a token nobody with the key made gets no further.
    """
    try:
        key = _key(secret)
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return None
        signing_input, _, signature = token.rpartition(".")
        if signing_input.count(".") != 1:
            return None
        if not _HS256.verify(signing_input.encode(), key, base64url_decode(signature)):
            return None
        payload = json.loads(base64url_decode(signing_input.partition(".")[2]))
        if not isinstance(payload, dict) or payload.get("room") != room:
            return None
        identity = payload.get("sub")
        return identity if isinstance(identity, str) and identity else None
    except Exception:  # malformed in any way (deep JSON: RecursionError): not a quick yes
        return None


def verify_token(
    secret: str | bytes,
    token: str | None,
    *,
    room: str,
    leeway: float = DEFAULT_LEEWAY,
    now: float | None = None,
) -> Claims:
    """Check ``token`` for ``room``; return its claims or raise :class:`NotAllowed`
    (with the reason): :class:`InvalidToken` when the token itself is bad
    (malformed: what is wrong in its shape, e.g. "its payload is not
    base64url"), a plain ``NotAllowed`` when there is none or it is for
    another room. A secret shorter than 32 bytes, a ``leeway`` that is not a
    finite number of seconds >= 0 or a ``now`` that is not a finite number
    raise :class:`InvalidSetting`."""
    key = _key(secret)
    # A NaN leeway made every time comparison False: an expired token passed.
    if not is_seconds(leeway) or leeway < 0:
        raise InvalidSetting(f"leeway must be a finite number of seconds >= 0, got {brief(leeway)}")
    if now is not None and not is_seconds(now):
        raise InvalidSetting(f"now must be None or a finite number of seconds, got {brief(now)}")
    if token is not None and not isinstance(token, str):
        raise NotAllowed(f"a join token must be a str, got {type(token).__name__}")
    if not token:
        # No token is no credential, not a bad one (sfu.errors.InvalidToken).
        raise NotAllowed("a join token is required for this room")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken(
            f"the join token is malformed: it is longer than {MAX_TOKEN_LENGTH // 1024} KB"
            " (a join token is a few hundred bytes)"
        )
    if not token.isascii():
        # A JWT is base64url text; anything else (a lone surrogate made PyJWT
        # raise UnicodeEncodeError) is refused before it is parsed.
        raise InvalidToken("the join token is malformed: it is not ASCII (a JWT is base64url text)")
    try:
        payload = _decode(token, key, float(leeway), time.time() if now is None else float(now))
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the join token has expired") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("the join token is not valid yet (nbf in the future)") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken(
            "the join token's signature is wrong (tampered, or signed with another key)"
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"the join token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidKeyError:  # the secret's fault, not the token's
        raise InvalidSetting(_NOT_A_SECRET) from None
    except jwt.InvalidTokenError:
        # PyJWT's words name its internals ("Not enough segments"): say what
        # is wrong in the token itself.
        raise InvalidToken(_shape_problem(token)) from None
    return _claims(payload, room)


#: A base64url part of a JWT: its alphabet, unpadded or padded (as PyJWT takes it).
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _part(token_part: str, name: str) -> bytes:
    """``token_part`` decoded; ValueError (saying which part) unless it is canonical base64url."""
    unpadded = token_part.rstrip("=")
    if (
        not _BASE64URL.fullmatch(token_part)
        or (unpadded != token_part and len(token_part) % 4)
        or len(unpadded) % 4 == 1
    ):
        raise ValueError(f"its {name} is not base64url")
    decoded = base64url_decode(unpadded)
    if base64url_encode(decoded).decode() != unpadded:  # spare bits set: not what was encoded
        raise ValueError(f"its {name} is not base64url")
    return decoded


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"its {name} is not a JSON object")
    return value


def _shape_problem(token: str) -> str:
    """What is wrong in the shape of ``token``, which PyJWT refused as
    malformed (not for its signature, its times or a missing claim)."""
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError(
                "a JWT is three base64url parts joined by dots (header.payload.signature),"
                f" not {len(parts)}"
            )
        header = _json_object(_part(parts[0], "header"), "header")
        alg = header.get("alg")
        if alg is None:
            raise ValueError(f"its header names no alg (a join token's is {ALGORITHM})")
        if alg != ALGORITHM:
            raise ValueError(f"its alg is {alg!r:.40}, not {ALGORITHM}")
        payload = _json_object(_part(parts[1], "payload"), "payload")
        _part(parts[2], "signature")
        for parameter in ("crit", "b64"):
            if parameter in header:
                raise ValueError(f"its header has {parameter!r}, which join tokens do not use")
        if "kid" in header and not isinstance(header["kid"], str):
            raise ValueError("its header's key id (kid) is not a string")
    except ValueError as problem:
        return f"the join token is malformed: {problem}"
    # Signed with the key (PyJWT checks these claims once the signature is good).
    if "sub" in payload and not isinstance(payload["sub"], str):
        return "the join token's subject (sub, its identity) is not a string"
    if "jti" in payload and not isinstance(payload["jti"], str):
        return "the join token's id (jti) is not a string"
    if payload.get("aud"):
        return (
            "the join token has an audience (aud), which join tokens do not use"
            " (its room claim says where it is good)"
        )
    return "the join token is malformed"


#: Payloads of tokens whose signature checked out, by a digest of key and
#: token: a join's token is checked by the signaling or WHIP/WHEP and again
#: by the room (~80 µs each), and a reconnect brings the same token. Only
#: the signature is remembered; the times are checked at every use.
_SIGNED: dict[bytes, dict[str, Any]] = {}
#: Enough for a join storm's tokens between their two checks (a join may
#: wait its admission turn behind a thousand others).
SIGNED_KEPT = 4096


def _signed_payload(token: str, key: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(len(key).to_bytes(4, "big") + key + token.encode()).digest()
    payload = _SIGNED.get(digest)
    if payload is None:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={
                "require": ["exp", "nbf", "sub", "room", "role", "jti"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
        if len(_SIGNED) >= SIGNED_KEPT:
            try:
                _SIGNED.pop(next(iter(_SIGNED)), None)  # the oldest
            except (StopIteration, RuntimeError):  # emptied or changed by another thread
                pass
        _SIGNED[digest] = payload
    return payload


def _decode(token: str, key: bytes, leeway: float, now: float) -> dict[str, object]:
    """Check the signature with PyJWT, then the times against ``now`` (injectable for tests)."""
    payload = _signed_payload(token, key)
    exp, nbf = payload["exp"], payload["nbf"]
    if not is_number(exp) or not is_number(nbf):  # finite, not a bool
        raise InvalidToken("the join token's exp and nbf are not both finite numbers (seconds)")
    if now >= exp + leeway:  # (RFC 7519 4.1.4: valid only before exp)
        raise jwt.ExpiredSignatureError("expired")
    if now < nbf - leeway:
        raise jwt.ImmatureSignatureError("not yet valid")
    return cast(dict[str, object], payload)


def _claims(payload: dict[str, object], room: str) -> Claims:
    if not isinstance(payload.get("room"), str):
        raise InvalidToken("the join token's room claim is not a string")
    if payload.get("room") != room:
        raise NotAllowed(f"the join token is for room {payload.get('room')!r}, not {room!r}")
    identity, role = payload.get("sub"), payload.get("role")
    if not isinstance(identity, str) or not identity:
        raise InvalidToken("the join token's subject (identity) is empty")
    if len(identity) > MAX_NAME_LENGTH:
        raise InvalidToken(
            f"the join token's subject (identity) is longer than {MAX_NAME_LENGTH} characters"
        )
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidToken(f"the join token's role {role!r} is not one of {sorted(ROLES)}")
    raw_grants = payload.get("grants", sorted(ROLES[role]))
    if (
        not isinstance(raw_grants, list)
        or not all(isinstance(grant, str) for grant in raw_grants)
        or not set(raw_grants) <= GRANTS
    ):
        raise InvalidToken("the join token's grants are malformed")
    return Claims(
        room=room,
        identity=identity,
        role=cast(Role, role),
        grants=frozenset(cast(Grant, g) for g in raw_grants),
        expires=float(cast(float, payload["exp"])),
        token_id=str(payload["jti"]),
    )
