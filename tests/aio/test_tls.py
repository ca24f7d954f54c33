"""``proxyshare.aio`` over ``tls://``: the same calls, the same refusals as the sync client."""

from __future__ import annotations

import asyncio

import pytest

import proxyshare
from proxyshare import aio
from tests.aio.helpers import run
from tests.tls_support import Certs, make_certs, tls_server

pytestmark = [pytest.mark.timeout(60), pytest.mark.matrix]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_an_async_client_speaks_tls_and_shares_state_with_a_sync_one(certs: Certs) -> None:
    with tls_server(certs) as server:
        key = bytes(server.authkey)

        async def main() -> int:
            async with aio.connect(server.address, authkey=key, tls_ca=certs.ca) as mgr:
                hits = await mgr.counter("hits")
                await asyncio.gather(*(hits.increment() for _ in range(200)))
                lock = await mgr.lock("guard")
                async with lock:
                    d = await mgr.dict("d")
                    await d.set("big", b"x" * (1 << 20))  # many TLS records
                    assert await d.get("big") == b"x" * (1 << 20)
                return await hits.get()

        assert run(main()) == 200
        sync = proxyshare.connect(server.address, authkey=key, tls_ca=certs.ca)
        assert sync.counter("hits").get() == 200


def test_mutual_tls_takes_the_client_certificate(certs: Certs) -> None:
    with tls_server(certs, mutual=True) as server:

        async def main() -> int:
            async with aio.connect(
                server.address,
                authkey=bytes(server.authkey),
                tls_ca=certs.ca,
                tls_cert=certs.client_cert,
                tls_key=certs.client_key,
            ) as mgr:
                return await (await mgr.counter("c")).increment()

        assert run(main()) == 1


def test_an_untrusted_server_certificate_says_which_ca_to_pass(certs: Certs) -> None:
    with tls_server(certs) as server:

        async def main() -> None:
            async with aio.connect(
                server.address, authkey=bytes(server.authkey), tls_ca=certs.other_ca
            ) as mgr:
                await mgr.names()

        with pytest.raises(proxyshare.AuthenticationError, match="tls_ca=FILE"):
            run(main())


def test_tls_files_for_a_plain_address_are_refused() -> None:
    with pytest.raises(proxyshare.ProxyShareError, match="not a tls:// address"):
        aio.connect("127.0.0.1:9", authkey=b"k", tls_ca="ca.pem")
