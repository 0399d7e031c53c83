"""What the market is, as plain data and pure functions: the NYSE calendar
(``market.trading_calendar``), bar series and one symbol's view of the market
(``market.market_data``), and the technical indicators over them (``market.indicators``).
Strategies see nothing but these; nothing here imports beyond ``core``."""
