"""analytics/reporting.py: a self-contained HTML report and a JSON summary a user can open offline."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs

from analytics import reporting
from core.clock import EXCHANGE_TZ
from analytics.performance import compute_performance
from tests.conftest import SHARED_DATA

UTC = timezone.utc


def et(*args: int) -> datetime:
    return datetime(*args, tzinfo=EXCHANGE_TZ)


CURVE = [(et(2024, 3, 4, 9, 30) + timedelta(days=i), v) for i, v in
         enumerate(["100000", "100300", "100200", "100400", "100200"])]
TRADES = [
    dict(symbol="AAPL", strategy="momentum", side="long", qty=100, entry_at=et(2024, 3, 4, 10),
         exit_at=et(2024, 3, 4, 14), entry_price="100", exit_price="103", pnl="300", return_pct="0.03",
         exit_reason="take_profit"),
    dict(symbol="MSFT", strategy="mean_reversion", side="long", qty=50, entry_at=et(2024, 3, 5, 10, 30),
         exit_at=et(2024, 3, 6, 10, 30), entry_price="200", exit_price="198", pnl="-100", return_pct="-0.01",
         exit_reason="stop_loss"),
]
META = {"period": "2024-03-04 to 2024-03-08", "symbols": ["AAPL", "MSFT"], "profile": "default",
        "strategies": ["momentum", "mean_reversion"], "commission": "per-share 0.005", "slippage": "5 bps"}
WALK_FORWARD = [
    {"window": 1, "train_start": "2023-01-01", "train_end": "2023-06-30", "test_start": "2023-07-01",
     "test_end": "2023-09-30", "out_of_sample": {"sharpe": 1.2345, "total_return": 0.0421, "trades": 17}},
    {"window": 2, "train_start": "2023-04-01", "train_end": "2023-09-30", "test_start": "2023-10-01",
     "test_end": "2023-12-31", "out_of_sample": {"sharpe": float("nan"), "total_return": -0.0133, "trades": 0}},
]
CALIBRATION = {
    "bins": [
        {"bin_low": 0.5, "bin_high": 0.6, "count": 40, "mean_forecast": 0.55, "hit_rate": 0.52},
        {"bin_low": 0.6, "bin_high": 0.7, "count": 25, "mean_forecast": 0.64, "hit_rate": 0.68},
    ],
    "brier": 0.2311,
    "ece": 0.0417,
}


class _Links(HTMLParser):
    """Every tag and every src/href attribute the browser would see."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.links += [value or "" for name, value in attrs if name in ("src", "href")]


def parse(page: str) -> _Links:
    parser = _Links()
    parser.feed(page)
    return parser


def assert_self_contained(page: str, *, no_url_text: bool = True) -> None:
    parsed = parse(page)
    assert parsed.links and all(link.startswith("data:image/png;base64,") for link in parsed.links)
    assert not {"script", "link", "iframe", "object", "embed"} & parsed.tags
    if no_url_text:  # not even as text: our own markup never names a URL
        assert not re.search(r"https?://", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page


def sections(page: str) -> set[str]:
    return set(re.findall(r'<(?:section|header) id="([^"]+)"', page))


def section(page: str, name: str) -> str:
    match = re.search(rf'<section id="{name}".*?</section>', page, re.DOTALL)
    assert match, f"no section {name}"
    return match.group(0)


def write(tmp_path: Path, curve: list, trades: list, **extra: object) -> tuple[str, dict, Path, Path]:
    report = compute_performance(curve, trades)
    html_path, json_path = reporting.write_report(
        tmp_path / "out", report=report, equity_curve=curve, trades=trades, title=extra.pop("title", "Backtest"),
        meta=extra.pop("meta", META), **extra)
    return html_path.read_text(encoding="utf-8"), json.loads(json_path.read_text(encoding="utf-8")), html_path, json_path


def test_full_report_is_self_contained_and_has_every_section(tmp_path: Path) -> None:
    with capture_logs() as logs:
        page, summary, html_path, json_path = write(
            tmp_path, CURVE, TRADES, walk_forward=WALK_FORWARD, calibration=CALIBRATION)
    assert html_path == tmp_path / "out" / "report.html" and json_path == tmp_path / "out" / "summary.json"
    assert_self_contained(page)
    assert sections(page) >= {"summary", "metrics", "equity", "drawdown", "monthly-returns", "strategies",
                              "symbols", "timing", "trades", "walk-forward", "calibration"}
    # charts: equity, drawdown, heatmap, reliability diagram, each a real PNG inline
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in images)
    # header metadata
    header = re.search(r'<header id="summary">.*?</header>', page, re.DOTALL).group(0)
    for text in ("Backtest", "AAPL, MSFT", "default", "momentum, mean_reversion", "per-share 0.005", "5 bps"):
        assert text in header
    # key numbers: 100000 -> 100200 is +$200 (0.20 %); peak 100400 -> 100200 is $200; 1 win of 2 trades
    metrics = section(page, "metrics")
    assert "$200.00" in metrics and "0.20 %" in metrics and "50.00 %" in metrics
    assert "3.00" in metrics  # profit factor 300 / 100
    strategies = section(page, "strategies")
    assert "momentum" in strategies and "mean_reversion" in strategies and "-$100.00" in strategies
    assert "AAPL" in section(page, "symbols")
    trades = section(page, "trades")
    assert "2024-03-04 10:00 ET" in trades and "take_profit" in trades and "$300.00" in trades
    assert "Showing the first" not in trades
    walk = section(page, "walk-forward")
    assert "out_of_sample.sharpe" in walk and "1.2345" in walk and "2023-07-01" in walk and "n/a" in walk
    calibration = section(page, "calibration")
    assert "0.2311" in calibration and "0.0417" in calibration and "0.50-0.60" in calibration
    assert [e["event"] for e in logs if e["event"] == "report_written"] == ["report_written"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")], "no temporary files left"


def test_summary_json_matches_the_report(tmp_path: Path) -> None:
    _, summary, _, json_path = write(tmp_path, CURVE, TRADES, walk_forward=WALK_FORWARD, calibration=CALIBRATION)
    assert summary["performance"] == compute_performance(CURVE, TRADES).to_dict()
    assert summary["title"] == "Backtest" and summary["meta"]["symbols"] == ["AAPL", "MSFT"]
    assert summary["walk_forward"][1]["out_of_sample"]["sharpe"] is None  # NaN is not JSON
    assert summary["calibration"]["brier"] == 0.2311
    json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_data_is_html_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    trades = [dict(TRADES[0], symbol=evil, strategy='x"><img src=http://evil.test/a.png>', exit_reason="<b>why</b>")]
    page, _, _, _ = write(tmp_path, CURVE, trades, title="Run <i>1</i> & co",
                          meta={"note": "<iframe src='https://evil.test'>", "<k>": "v"},
                          walk_forward=[{"window": "<w>", "https://x": 1}])
    assert "<script" not in page and "<iframe" not in page and "<b>why" not in page and "<i>1" not in page
    assert_self_contained(page, no_url_text=False)  # the URLs in the data are inert text
    assert "src=http://evil.test" in page and "&lt;img" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Run &lt;i&gt;1&lt;/i&gt; &amp; co" in page
    assert "&lt;k&gt;" in page and "&lt;w&gt;" in page


def test_zero_trades_and_single_point_curve(tmp_path: Path) -> None:
    page, summary, _, _ = write(tmp_path, CURVE[:1], [])
    assert {"metrics", "equity", "drawdown", "monthly-returns", "trades"} <= sections(page)
    assert "walk-forward" not in sections(page) and "calibration" not in sections(page)
    assert_self_contained(page)
    assert "No closed trades." in section(page, "trades")
    assert "Not enough data" in section(page, "monthly-returns")
    assert "equity curve has a single point" in section(page, "warnings")
    assert summary["performance"]["trades"]["total"] == 0
    assert summary["performance"]["sharpe"] is None
    assert len(re.findall(r"data:image/png;base64,", page)) == 2  # equity and drawdown, no heatmap


def test_five_years_of_daily_data_with_a_long_trade_list(tmp_path: Path) -> None:
    frame = pd.read_csv(SHARED_DATA / "daily" / "SPY-1d-1993-01-29-2026-08-07.csv").tail(1260)
    curve = [(datetime.fromisoformat(d).replace(hour=16, tzinfo=EXCHANGE_TZ), round(c * 1000, 2))
             for d, c in zip(frame["timestamp"], frame["close"])]
    trades = []
    for i in range(600):
        (entry_at, entry), (exit_at, exit_) = curve[i * 2], curve[i * 2 + 1]
        trades.append(dict(symbol="SPY", strategy=("breakout", "momentum")[i % 2], side="long", qty=1,
                           entry_at=entry_at, exit_at=exit_at, entry_price=entry / 1000, exit_price=exit_ / 1000,
                           pnl=round((exit_ - entry) / 1000, 2)))
    page, summary, _, _ = write(tmp_path, curve, trades)
    trade_section = section(page, "trades")
    assert "Showing the first 500 of 600 trades" in trade_section
    assert trade_section.count("<tr>") == 501  # header + 500 rows
    years = [row["year"] for row in summary["performance"]["monthly_returns"]]
    assert years == list(range(2021, 2027))
    heatmap_rows = re.findall(r'<td class="l">(\d{4})</td>', section(page, "monthly-returns"))
    assert heatmap_rows == [str(y) for y in years]


def test_overwrites_an_existing_report(tmp_path: Path) -> None:
    write(tmp_path, CURVE, TRADES, title="first")
    page, summary, _, _ = write(tmp_path, CURVE, TRADES, title="second")
    assert "<h1>second</h1>" in page and summary["title"] == "second"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "summary.json"]


def test_bad_calibration_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    report = compute_performance(CURVE, TRADES)
    with pytest.raises(ValueError, match="calibration bin 0 needs a forecast"):
        reporting.write_report(tmp_path / "out", report=report, equity_curve=CURVE, trades=TRADES, title="t",
                               meta={}, calibration={"bins": [{"count": 3}], "brier": 0.2, "ece": 0.1})
    assert not (tmp_path / "out").exists()


def test_thinning_a_long_curve_keeps_its_extremes() -> None:
    rng = np.random.default_rng(7)
    values = 100_000 * np.cumprod(1 + rng.normal(0, 0.001, 200_000))
    kept = reporting._thin(values)
    assert len(kept) <= reporting.MAX_PLOT_POINTS + 2
    assert {0, len(values) - 1, int(values.argmin()), int(values.argmax())} <= set(kept.tolist())


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.1234, "12.34 %"), (None, "n/a"), (float("inf"), "n/a"), (-0.005, "-0.50 %")],
)
def test_percent_format(value: float | None, text: str) -> None:
    assert reporting.fmt_pct(value) == text


def test_money_format() -> None:
    from decimal import Decimal

    assert reporting.fmt_money(Decimal("-1234.5")) == "-$1,234.50"
    assert reporting.fmt_money(Decimal("1000000")) == "$1,000,000.00"
    assert reporting.fmt_money(None) == "n/a"
