"""api/price.py: price and emission from the chain, cached; null fields with a reason when unavailable."""

from __future__ import annotations

from api.price import BittensorPriceReader, PriceQuote, PriceService, UnavailablePriceReader


def test_price_unavailable_on_sim_and_cached_reader():
    class FakeReader:
        def __init__(self) -> None:
            self.n = 0

        def read(self, netuid: int) -> PriceQuote:
            self.n += 1
            return PriceQuote(0.0123, 0.5, 4242, None)

    fake = FakeReader()
    svc = PriceService(fake, netuid=7, ttl_s=60.0)
    assert svc.get()[0].price_tao_per_alpha == 0.0123 and svc.get()[0].block == 4242 and fake.n == 1
    assert UnavailablePriceReader("sim").read(7).price_tao_per_alpha is None


def test_price_reader_parses_sdk_answers():
    class Prices:
        async def alpha_price(self, netuid: int) -> dict:
            return {"netuid": netuid, "tao_per_alpha": 0.015, "price_rao": 15_000_000}

    class Client:
        prices = Prices()

        def __init__(self, network: str) -> None:
            pass

        async def connect(self):
            return self

        async def query(self, item, params):
            assert item == ("SubtensorModule", "SubnetTaoInEmission") and params == [7]
            return 250_000_000

        async def block(self) -> int:
            return 5_000_000

        async def close(self) -> None:
            pass

    q = BittensorPriceReader("finney", client_factory=Client).read(7)
    assert (q.price_tao_per_alpha, q.emission_tao_per_block, q.block, q.reason) == (0.015, 0.25, 5_000_000, None)
