"""The multiprocessing HMAC handshake, written for asyncio.

A proxyshare server authenticates every connection with the challenge
exchange of ``multiprocessing.connection`` (``deliver_challenge`` then
``answer_challenge`` on its side), and the sync client runs the stdlib's
functions on a blocking socket.  Those block, so the asyncio client speaks
the same documented messages itself (CPython's ``multiprocessing/connection.py``
describes them step by step):

    server ── b"#CHALLENGE#" + message ──▶ client     message: "{sha256}" + 40 random
    server ◀── mac(authkey, message) ──── client      bytes (3.12+), or 20 random
    server ── b"#WELCOME#" or "#FAILURE#" ─▶ client   bytes (up to 3.11: HMAC-MD5)
    ... then the same the other way round, the client asking.

A ``{digest}`` prefix names the HMAC's hash, and the MAC covers the prefix
too, so neither side can be talked down to a weaker hash; a bare 20-byte
challenge (or a 16-byte answer) is the legacy HMAC-MD5 form.  The client
answers whichever form the server uses, and asks in the modern form, which
both old and new servers answer.  Every message is one length-prefixed frame
of at most 256 bytes.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable

__all__ = ["HandshakeRefused", "answer_challenge", "deliver_challenge"]

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"
MAX_MESSAGE = 256  # what the stdlib accepts in a handshake message
_RANDOM_BYTES = 40
_LEGACY_CHALLENGE = 20  # the length of an HMAC-MD5-only server's challenge
_MD5_SIZE = 16
_DIGESTS = frozenset({b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"})
_LONGEST_DIGEST = max(len(d) for d in _DIGESTS)

Recv = Callable[[], Awaitable[bytes]]
Send = Callable[[bytes], None]


class HandshakeRefused(Exception):
    """The key was rejected, or the peer does not speak the handshake (the message says)."""

    def __init__(self, message: str, *, wrong_key: bool) -> None:
        super().__init__(message)
        self.wrong_key = wrong_key


def _digest_and_payload(message: bytes) -> tuple[str, bytes]:
    """``("", message)`` for the legacy HMAC-MD5 form, else the named hash and the MAC."""
    if len(message) in (_LEGACY_CHALLENGE, _MD5_SIZE):
        return "", message
    if message.startswith(b"{"):
        end = message.find(b"}", 1, _LONGEST_DIGEST + 2)
        if end > 0 and message[1:end] in _DIGESTS:
            return message[1:end].decode("ascii"), message[end + 1 :]
    raise HandshakeRefused(
        f"a handshake message of {len(message)} bytes names no supported hash", wrong_key=False
    )


def _response(authkey: bytes, challenge: bytes) -> bytes:
    """The answer to ``challenge``: a raw HMAC-MD5 for a legacy server, else prefixed."""
    digest, _payload = _digest_and_payload(challenge)
    if not digest:
        return hmac.new(authkey, challenge, "md5").digest()
    return b"{%s}%s" % (digest.encode("ascii"), hmac.new(authkey, challenge, digest).digest())


def _verify(authkey: bytes, challenge: bytes, response: bytes) -> bool:
    digest, mac = _digest_and_payload(response)
    try:
        expected = hmac.new(authkey, challenge, digest or "md5").digest()
    except ValueError:  # a hash this Python lacks (FIPS mode without MD5)
        return False
    return hmac.compare_digest(expected, mac)


def _check_size(message: bytes) -> bytes:
    if len(message) > MAX_MESSAGE:
        raise HandshakeRefused(
            f"a handshake message of {len(message)} bytes (at most {MAX_MESSAGE})",
            wrong_key=False,
        )
    return message


async def answer_challenge(recv: Recv, send: Send, authkey: bytes) -> None:
    """Prove to the server that this side has ``authkey``."""
    message = _check_size(await recv())
    if not message.startswith(CHALLENGE):
        raise HandshakeRefused("the first message was not a challenge", wrong_key=False)
    challenge = message[len(CHALLENGE) :]
    if len(challenge) < _LEGACY_CHALLENGE:
        raise HandshakeRefused("the challenge was too short", wrong_key=False)
    send(_response(authkey, challenge))
    if _check_size(await recv()) != WELCOME:
        raise HandshakeRefused("the server rejected the authkey", wrong_key=True)


async def deliver_challenge(recv: Recv, send: Send, authkey: bytes) -> None:
    """Check that the server has ``authkey`` too (so a client never talks to an impostor)."""
    challenge = b"{sha256}" + os.urandom(_RANDOM_BYTES)
    send(CHALLENGE + challenge)
    if _verify(authkey, challenge, _check_size(await recv())):
        send(WELCOME)
        return
    send(FAILURE)
    raise HandshakeRefused(
        "the server's answer to this client's challenge was wrong", wrong_key=True
    )
