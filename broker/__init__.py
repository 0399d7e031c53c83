"""The broker as the daemon sees it, below the gateway: the one interface the loop talks to
(``broker.interface.Broker``), the wire models parsed at the edge (``broker.models``, the catalogue over ``broker.wire``,
``broker.trading_models``, ``broker.market_models``, ``broker.order_requests`` and
``broker.responses``), the
error taxonomy that maps Alpaca's answers onto ``core.errors`` (``broker.broker_errors``),
client-side rate limiting (``broker.rate_limit``) and the clock that follows the broker's
(``broker.broker_clock``). ``api_gateway.py`` at the top builds the HTTP client on these and
on the parts it owns: the HTTP transport (``broker.transport``), tolerant parsing
(``broker.parsing``), order submission with unknown outcomes resolved (``broker.order_desk``)
and the market data endpoints (``broker.market_data_client``)."""
