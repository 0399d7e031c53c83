"""Self-contained HTML performance report and a JSON summary beside it.

:func:`write_report` turns a :class:`analytics.performance.PerformanceReport` (plus the equity curve
and trades it was computed from) into ``report.html`` and ``summary.json`` in one directory.
The HTML opens offline, from a mail attachment or a server without internet: charts are PNG
images embedded as base64 (matplotlib's Agg renderer, no pyplot state), styles are inline,
and there is no script, font or link to fetch. Everything that comes from data (symbols,
strategy names, exit reasons, metadata, walk-forward keys) is HTML-escaped.

Both files are written atomically (a temporary file in the same directory, then a rename),
so a reader never sees half a report, and nothing is written when the inputs are invalid.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import os
import uuid
from dataclasses import fields, is_dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import structlog
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from core.clock import EXCHANGE_TZ
from core.private_files import FILE_MODE, private_dir
from analytics.performance import (
    MONTH_NAMES,
    BucketStats,
    GroupStats,
    PerformanceReport,
    TradeRecord,
    drawdown_series,
    normalize_curve,
    normalize_trades,
)

log = structlog.get_logger(__name__)

HTML_NAME = "report.html"
JSON_NAME = "summary.json"
MAX_TRADE_ROWS = 500
MAX_PLOT_POINTS = 4000
NA = "n/a"

_WALK_FORWARD_FIRST = ("window", "train_start", "train_end", "test_start", "test_end")
_FORECAST_KEYS = ("mean_forecast", "mean_predicted", "predicted", "confidence")
_OBSERVED_KEYS = ("hit_rate", "observed", "observed_rate", "fraction_positive")
_COUNT_KEYS = ("count", "n")

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1100px;color:#1f2328;line-height:1.4;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f6f8fa}td.l,th.l{text-align:left}
.pos{color:#116329}.neg{color:#a40e26}.note{color:#59636e;font-size:13px}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;border-radius:6px}
.grid{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
img{max-width:100%;height:auto}.scroll{overflow-x:auto}
"""


# -- formatting ----------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def fmt_pct(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage: 0.1234 -> "12.34 %"."""
    return f"{value * 100:,.{digits}f} %" if _finite(value) else NA


def fmt_ratio(value: float | None, digits: int = 2) -> str:
    return f"{value:,.{digits}f}" if _finite(value) else NA


def fmt_money(value: Decimal | None) -> str:
    """Dollars with thousands separators and cents: Decimal("-1234.5") -> "-$1,234.50"."""
    if value is None:
        return NA
    cents = value.quantize(Decimal("0.01"))
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


def fmt_days(value: float | None) -> str:
    return f"{value:,.1f} d" if _finite(value) else NA


def fmt_hours(value: float | None) -> str:
    if not _finite(value):
        return NA
    assert value is not None
    return f"{value:,.1f} h" if value < 48 else f"{value / 24:,.1f} d"


def fmt_time(value: datetime | None) -> str:
    """An instant on the exchange's clock: "2024-03-04 10:00 ET"."""
    return value.astimezone(EXCHANGE_TZ).strftime("%Y-%m-%d %H:%M ET") if value is not None else NA


def _sign_class(value: Decimal | float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return "pos" if value > 0 else "neg" if value < 0 else ""


def _cell(value: Any) -> str:
    """A generic value (walk-forward, metadata) as text."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4f}" if math.isfinite(value) else NA
    if isinstance(value, (np.floating, np.integer)):
        return _cell(value.item())
    if isinstance(value, datetime):
        return fmt_time(value) if value.tzinfo else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def _plain(value: Any) -> Any:
    """JSON-safe copy of metadata: Decimal/Path as text, times ISO-8601, NaN/inf as null."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return _plain(value.item())
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return str(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """HTML table; cells are already-escaped HTML. The first ``left`` columns align left."""
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cells.append(f'<td class="l">{cell}</td>' if i < left else f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _colored(text: str, value: Decimal | float | None) -> str:
    css = _sign_class(value)
    return f'<span class="{css}">{_esc(text)}</span>' if css else _esc(text)


# -- charts --------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _local_times(times: Sequence[datetime]) -> np.ndarray:
    """Exchange wall-clock times as naive datetime64 (what the axes show)."""
    return np.array([t.astimezone(EXCHANGE_TZ).replace(tzinfo=None) for t in times], dtype="datetime64[s]")


def _thin(values: np.ndarray, limit: int = MAX_PLOT_POINTS) -> np.ndarray:
    """Indices to plot: all of them, or each bucket's low and high so the envelope survives."""
    n = len(values)
    if n <= limit:
        return np.arange(n)
    edges = np.linspace(0, n, limit // 2 + 1).astype(int)
    keep = {0, n - 1}
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            part = values[lo:hi]
            keep.add(lo + int(np.argmin(part)))
            keep.add(lo + int(np.argmax(part)))
    return np.array(sorted(keep))


def _equity_chart(times: list[datetime], equity: np.ndarray, trades: Sequence[TradeRecord]) -> str:
    figure = _figure(10, 4)
    axes = figure.add_subplot()
    local = _local_times(times)
    shown = _thin(equity)
    axes.plot(local[shown], equity[shown], color="#0969da", linewidth=1.2, marker="o" if len(equity) == 1 else None,
              label="equity")
    if trades:
        seconds = np.array([t.timestamp() for t in times])

        def level(moments: list[datetime]) -> np.ndarray:
            at = np.array([m.timestamp() for m in moments])
            index = np.clip(np.searchsorted(seconds, at, side="right") - 1, 0, len(equity) - 1)
            return equity[index]

        entries = [t.entry_at for t in trades]
        exits = [t.exit_at for t in trades]
        size = 28 if len(trades) <= 200 else 10
        axes.scatter(_local_times(entries), level(entries), marker="^", color="#1a7f37", s=size, zorder=3,
                     label="entry")
        axes.scatter(_local_times(exits), level(exits), marker="v", color="#cf222e", s=size, zorder=3, label="exit")
        axes.legend(loc="upper left", fontsize=8)
    axes.set_ylabel("equity ($)")
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.tight_layout()
    return _png(figure)


def _drawdown_chart(times: list[datetime], equity: np.ndarray) -> str:
    figure = _figure(10, 2.6)
    axes = figure.add_subplot()
    drawdown = drawdown_series(equity) * 100.0
    shown = _thin(drawdown)
    local = _local_times(times)[shown]
    axes.fill_between(local, drawdown[shown], 0.0, color="#cf222e", alpha=0.35, step=None)
    axes.plot(local, drawdown[shown], color="#a40e26", linewidth=0.8, marker="o" if len(equity) == 1 else None)
    axes.set_ylabel("drawdown (%)")
    axes.set_ylim(top=0.5)
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.tight_layout()
    return _png(figure)


def _heatmap(report: PerformanceReport) -> str:
    rows = report.monthly_returns
    grid = np.array([[np.nan if v is None else v * 100.0 for v in row.months] for row in rows], dtype=float)
    finite = grid[np.isfinite(grid)]
    bound = max(float(np.max(np.abs(finite))) if finite.size else 0.0, 0.1)
    figure = _figure(10, min(1.2 + 0.4 * len(rows), 24))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", aspect="auto",
                        norm=TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound))
    axes.set_xticks(range(12), MONTH_NAMES)
    axes.set_yticks(range(len(rows)), [str(row.year) for row in rows])
    font = 8 if len(rows) <= 20 else 6
    for y in range(grid.shape[0]):
        for x in range(12):
            value = grid[y, x]
            if math.isfinite(value):
                dark = abs(value) > 0.6 * bound
                axes.text(x, y, f"{value:.1f}", ha="center", va="center", fontsize=font,
                          color="white" if dark else "black")
    figure.colorbar(image, ax=axes, label="monthly return (%)")
    figure.tight_layout()
    return _png(figure)


def _calibration_bins(calibration: Mapping[str, Any]) -> list[tuple[float, float, int | None, str]]:
    bins = calibration.get("bins")
    if not isinstance(bins, (list, tuple)):
        raise ValueError("calibration['bins'] must be a list of bins")
    parsed = []
    for index, raw in enumerate(bins):
        if not isinstance(raw, Mapping):
            raise ValueError(f"calibration bin {index} must be a mapping, got {type(raw).__name__}")
        forecast = next((raw[k] for k in _FORECAST_KEYS if raw.get(k) is not None), None)
        observed = next((raw[k] for k in _OBSERVED_KEYS if raw.get(k) is not None), None)
        if forecast is None or observed is None:
            raise ValueError(
                f"calibration bin {index} needs a forecast ({'/'.join(_FORECAST_KEYS)}) and an observed rate "
                f"({'/'.join(_OBSERVED_KEYS)}), got keys {sorted(raw)}"
            )
        count = next((raw[k] for k in _COUNT_KEYS if raw.get(k) is not None), None)
        low, high = raw.get("bin_low"), raw.get("bin_high")
        span = f"{float(low):.2f}-{float(high):.2f}" if low is not None and high is not None else str(index + 1)
        parsed.append((float(forecast), float(observed), int(count) if count is not None else None, span))
    return parsed


def _reliability_chart(bins: list[tuple[float, float, int | None, str]]) -> str:
    figure = _figure(5, 5)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="#59636e", linewidth=1, label="perfect calibration")
    if bins:
        counts = np.array([c if c is not None else 1 for _, _, c, _ in bins], dtype=float)
        sizes = 20 + 180 * counts / counts.max()
        axes.plot([b[0] for b in bins], [b[1] for b in bins], color="#0969da", linewidth=1)
        axes.scatter([b[0] for b in bins], [b[1] for b in bins], s=sizes, color="#0969da", zorder=3,
                     label="bins (size = count)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("mean forecast probability")
    axes.set_ylabel("observed hit rate")
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)


# -- sections ------------------------------------------------------------------------------------


def _meta_section(title: str, meta: Mapping[str, Any]) -> str:
    rows = [(f"{_esc(key)}", _esc(_cell(value))) for key, value in meta.items()]
    table = _table(["Run", ""], rows, left=2) if rows else ""
    return f'<header id="summary"><h1>{_esc(title)}</h1>{table}</header>'


def _metrics_section(report: PerformanceReport) -> str:
    t = report.trades
    drawdown_days = fmt_days(report.max_drawdown_duration_days)
    if not report.longest_drawdown_recovered:
        drawdown_days += " (unrecovered)"
    recovery = fmt_days(report.time_to_recovery_days) if report.max_drawdown_pct > 0 else NA
    if report.max_drawdown_pct > 0 and report.max_drawdown_recovered_at is None:
        recovery = "not recovered"
    returns_rows = [
        ("Period", f"{fmt_time(report.start)} to {fmt_time(report.end)}"),
        ("Start equity", fmt_money(report.start_equity)),
        ("End equity", fmt_money(report.end_equity)),
        ("Net profit", fmt_money(report.net_profit)),
        ("Total return", fmt_pct(report.total_return)),
        ("Annual return (CAGR)", fmt_pct(report.annual_return)),
        ("Annual volatility", fmt_pct(report.annual_volatility)),
        ("Sharpe ratio", fmt_ratio(report.sharpe)),
        ("Sortino ratio", fmt_ratio(report.sortino)),
        ("Calmar ratio", fmt_ratio(report.calmar)),
        ("Max drawdown", f"{fmt_pct(report.max_drawdown_pct)} / {fmt_money(report.max_drawdown_amount)}"),
        ("Longest drawdown", drawdown_days),
        ("Time to recovery", recovery),
        ("Current drawdown", fmt_pct(report.current_drawdown_pct)),
        ("Recovery factor", fmt_ratio(report.recovery_factor)),
        ("VaR 95 (one period)", fmt_pct(report.var_95)),
        ("Expected shortfall 95", fmt_pct(report.expected_shortfall_95)),
        ("Periods per year / returns", f"{report.periods_per_year:,.0f} / {report.returns_count:,}"),
    ]
    trade_rows = [
        ("Trades", f"{t.total:,}"),
        ("Won / lost / breakeven", f"{t.winning:,} / {t.losing:,} / {t.breakeven:,}"),
        ("Win rate", fmt_pct(t.win_rate)),
        ("Profit factor", fmt_ratio(t.profit_factor)),
        ("Expectancy per trade", f"{fmt_money(t.expectancy)} ({fmt_pct(t.expectancy_pct)})"),
        ("Average win", f"{fmt_money(t.avg_win)} ({fmt_pct(t.avg_win_pct)})"),
        ("Average loss", f"{fmt_money(t.avg_loss)} ({fmt_pct(t.avg_loss_pct)})"),
        ("Largest win", f"{fmt_money(t.largest_win)} ({fmt_pct(t.largest_win_pct)})"),
        ("Largest loss", f"{fmt_money(t.largest_loss)} ({fmt_pct(t.largest_loss_pct)})"),
        ("Payoff ratio", fmt_ratio(t.payoff_ratio)),
        ("Gross profit / loss", f"{fmt_money(t.gross_profit)} / {fmt_money(t.gross_loss)}"),
        ("Max consecutive wins / losses", f"{t.max_consecutive_wins} / {t.max_consecutive_losses}"),
        ("Holding time avg / median / max",
         f"{fmt_hours(t.avg_holding_hours)} / {fmt_hours(t.median_holding_hours)} / {fmt_hours(t.max_holding_hours)}"),
        ("Exposure (time in market)", fmt_pct(t.exposure)),
        ("Max concurrent trades", f"{t.max_concurrent_trades}"),
    ]
    b = report.benchmark
    if b is not None:
        trade_rows += [
            ("Benchmark total return", fmt_pct(b.total_return)),
            ("Benchmark annual return", fmt_pct(b.annual_return)),
            ("Benchmark Sharpe", fmt_ratio(b.sharpe)),
            ("Benchmark max drawdown", fmt_pct(b.max_drawdown_pct)),
            ("Beta / correlation", f"{fmt_ratio(b.beta)} / {fmt_ratio(b.correlation)}"),
            ("Excess return", fmt_pct(b.excess_return)),
        ]
    left = _table(["Returns and risk", ""], [(_esc(k), _esc(v)) for k, v in returns_rows])
    right = _table(["Trades", ""], [(_esc(k), _esc(v)) for k, v in trade_rows])
    return f'<section id="metrics"><h2>Key metrics</h2><div class="grid">{left}{right}</div></section>'


def _warnings_section(report: PerformanceReport) -> str:
    if not report.warnings:
        return ""
    items = "".join(f"<li>{_esc(w)}</li>" for w in report.warnings)
    return f'<section id="warnings" class="warn"><strong>Read with care:</strong><ul>{items}</ul></section>'


def _monthly_section(report: PerformanceReport) -> str:
    if not report.monthly_returns:
        return ('<section id="monthly-returns"><h2>Monthly returns</h2>'
                '<p class="note">Not enough data: the equity curve has a single point.</p></section>')
    rows = []
    for row in report.monthly_returns:
        cells = [_esc(row.year)] + [_colored(fmt_pct(v, 1), v) if v is not None else "" for v in row.months]
        rows.append(cells + [_colored(fmt_pct(row.total, 1), row.total)])
    table = _table(["Year", *MONTH_NAMES, "Year total"], rows)
    image = _img(_heatmap(report), "Monthly returns heatmap")
    note = '<p class="note">Months on the New York clock; returns compounded from the equity curve.</p>'
    return f'<section id="monthly-returns"><h2>Monthly returns</h2>{image}{note}{table}</section>'


def _group_table(groups: Sequence[GroupStats], label: str) -> str:
    if not groups:
        return '<p class="note">No closed trades.</p>'
    rows = [
        (_esc(g.key), f"{g.trades:,}", f"{g.winning:,}", f"{g.losing:,}", _esc(fmt_pct(g.win_rate, 1)),
         _colored(fmt_money(g.pnl), g.pnl), _esc(fmt_ratio(g.profit_factor)), _colored(fmt_pct(g.avg_return), g.avg_return),
         _esc(fmt_pct(g.avg_mfe)), _esc(fmt_pct(g.avg_mae)))
        for g in groups
    ]
    return _table([label, "Trades", "Won", "Lost", "Win rate", "P&amp;L", "Profit factor", "Avg return",
                   "Avg MFE", "Avg MAE"], rows)


def _bucket_table(buckets: Sequence[BucketStats], label: str, key_format: str) -> str:
    if not buckets:
        return '<p class="note">No closed trades.</p>'
    rows = [
        (_esc(key_format.format(b.key)), f"{b.trades:,}", _esc(fmt_pct(b.win_rate, 1)), _colored(fmt_money(b.pnl), b.pnl))
        for b in buckets
    ]
    return _table([label, "Trades", "Win rate", "P&amp;L"], rows)


def _trades_section(trades: Sequence[TradeRecord]) -> str:
    if not trades:
        return '<section id="trades"><h2>Trades</h2><p class="note">No closed trades.</p></section>'
    shown = trades[:MAX_TRADE_ROWS]
    rows = [
        (f"{i + 1:,}", _esc(t.symbol), _esc(t.strategy), _esc(t.side), _esc(f"{t.qty:,}"), _esc(fmt_time(t.entry_at)),
         _esc(fmt_time(t.exit_at)), _esc(fmt_money(t.entry_price)), _esc(fmt_money(t.exit_price)),
         _colored(fmt_money(t.pnl), t.pnl), _colored(fmt_pct(float(t.return_pct)), t.return_pct),
         _esc(fmt_hours(t.holding_hours)), _esc(_opt_pct(t.mfe_pct)), _esc(_opt_pct(t.mae_pct)),
         _esc(t.exit_reason or ""))
        for i, t in enumerate(shown)
    ]
    table = _table(["#", "Symbol", "Strategy", "Side", "Qty", "Entry", "Exit", "Entry price", "Exit price", "P&amp;L",
                    "Return", "Held", "MFE", "MAE", "Exit reason"], rows, left=4)
    note = ""
    if len(trades) > len(shown):
        note = (f'<p class="note">Showing the first {len(shown):,} of {len(trades):,} trades '
                f"(ordered by exit time).</p>")
    return f'<section id="trades"><h2>Trades</h2>{note}{table}</section>'


def _opt_pct(fraction: Decimal | None) -> str:
    """An excursion as a percentage; a dash when it was not measured."""
    return fmt_pct(None if fraction is None else float(fraction))


def _flatten(row: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Mapping):
            for inner, item in value.items():
                flat[f"{key}.{inner}"] = item
        else:
            flat[str(key)] = value
    return flat


def _walk_forward_section(windows: Sequence[Mapping[str, Any]]) -> str:
    flat = []
    for index, window in enumerate(windows):
        if not isinstance(window, Mapping):
            raise ValueError(f"walk_forward[{index}] must be a mapping, got {type(window).__name__}")
        flat.append(_flatten(window))
    columns = [c for c in _WALK_FORWARD_FIRST if any(c in row for row in flat)]
    for row in flat:
        columns += [key for key in row if key not in columns]
    rows = [[_esc(_cell(row.get(column))) for column in columns] for row in flat]
    body = _table([_esc(c) for c in columns], rows) if flat else '<p class="note">No walk-forward windows.</p>'
    note = '<p class="note">Each window trains on its train dates and is scored only on the test dates after them.</p>'
    return f'<section id="walk-forward"><h2>Walk-forward (out of sample)</h2>{note}{body}</section>'


def _calibration_section(calibration: Mapping[str, Any], bins: list[tuple[float, float, int | None, str]]) -> str:
    brier, ece = calibration.get("brier"), calibration.get("ece")
    scores = _table(["Score", ""], [("Brier score", _esc(_cell(brier))),
                                   ("Expected calibration error", _esc(_cell(ece)))])
    rows = [(_esc(span), _esc(_cell(count)), _esc(f"{forecast:.3f}"), _esc(f"{observed:.3f}"))
            for forecast, observed, count, span in bins]
    table = _table(["Bin", "Count", "Mean forecast", "Hit rate"], rows)
    image = _img(_reliability_chart(bins), "Reliability diagram")
    return (f'<section id="calibration"><h2>Calibration</h2><div class="grid">{image}<div>{scores}{table}</div></div>'
            "</section>")


def _comparison_section(comparison: Mapping[str, Any]) -> str:
    """The run beside buy-and-hold, the benchmark and random entries, and capital deployed."""
    rows = []
    run = comparison.get("run") or {}
    rows.append(("This run", _esc(fmt_pct(run.get("total_return"))), "equity, start to end"))
    hold = comparison.get("buy_and_hold_universe")
    if hold:
        left_out = f"; left out (no bar on the first session): {', '.join(hold['left_out'])}" if hold.get("left_out") else ""
        rows.append(("Buy-and-hold of the universe", _esc(fmt_pct(hold.get("total_return"))),
                     _esc(f"equal dollars in {', '.join(hold.get('symbols', []))} at the first open{left_out}")))
    bench = comparison.get("benchmark")
    if bench and bench.get("total_return") is not None:
        rows.append((_esc(f"Buy-and-hold {bench.get('symbol')}"), _esc(fmt_pct(bench.get("total_return"))),
                     "first open to last close"))
    table = _table(["", "Return", "How"], rows)
    rand = comparison.get("random_entries")
    if rand:
        random_text = (f"<p>Closed-trade P&amp;L {_esc(fmt_money(Decimal(str(rand['run_pnl']))))} is at the "
                       f"<b>percentile {float(rand['percentile']):.0f}</b> "
                       f"of {_esc(rand['draws'])} random-entry runs (median {_esc(fmt_money(Decimal(str(rand['median_pnl']))))}, "
                       f"5&ndash;95 % {_esc(fmt_money(Decimal(str(rand['p5_pnl']))))} .. "
                       f"{_esc(fmt_money(Decimal(str(rand['p95_pnl']))))}).</p>"
                       f'<p class="note">{_esc(rand.get("method", ""))}; seed {_esc(rand.get("seed"))}.</p>')
    else:
        random_text = '<p class="note">No closed trade to compare with random entries.</p>'
    capital = comparison.get("capital_deployed")
    capital_text = (f"<p>Capital deployed: {_esc(fmt_pct(capital.get('average')))} of equity on average at the "
                    f"close, at most {_esc(fmt_pct(capital.get('max')))}.</p>") if capital else ""
    return (f'<section id="comparison"><h2>Against benchmarks and chance</h2>{table}{random_text}{capital_text}'
            "</section>")


# -- entry point ---------------------------------------------------------------------------------


def render_html(
    *,
    report: PerformanceReport,
    equity_curve: Iterable[Any],
    trades: Iterable[Any],
    title: str,
    meta: Mapping[str, Any],
    walk_forward: Sequence[Mapping[str, Any]] | None = None,
    calibration: Mapping[str, Any] | None = None,
    comparison: Mapping[str, Any] | None = None,
) -> str:
    """The report as one self-contained HTML document (see :func:`write_report`)."""
    curve = normalize_curve(equity_curve)
    records = normalize_trades(trades)
    bins = _calibration_bins(calibration) if calibration is not None else None
    times = [t for t, _ in curve]
    equity = np.array([float(v) for _, v in curve], dtype=float)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>",
        _meta_section(title, meta),
        _warnings_section(report),
        _metrics_section(report),
        _comparison_section(comparison) if comparison else "",
        '<section id="equity"><h2>Equity curve</h2>',
        _img(_equity_chart(times, equity, records), "Equity curve with trade entries and exits"),
        '<p class="note">Entries: green &#9650;, exits: red &#9660;, placed on the equity at that moment. '
        "Times on the New York clock.</p></section>",
        '<section id="drawdown"><h2>Drawdown</h2>',
        _img(_drawdown_chart(times, equity), "Drawdown from the running peak"),
        "</section>",
        _monthly_section(report),
        f'<section id="strategies"><h2>Per strategy</h2>{_group_table(report.by_strategy, "Strategy")}</section>',
        f'<section id="symbols"><h2>Per symbol</h2>{_group_table(report.by_symbol, "Symbol")}</section>',
        '<section id="timing"><h2>Best hours and weekdays</h2><div class="grid">',
        _bucket_table(report.best_hours, "Entry hour (ET)", "{:02d}:00"),
        _bucket_table(report.best_weekdays, "Entry weekday (ET)", "{}"),
        "</div></section>",
        _trades_section(records),
    ]
    if walk_forward is not None:
        parts.append(_walk_forward_section(walk_forward))
    if calibration is not None and bins is not None:
        parts.append(_calibration_section(calibration, bins))
    parts.append('<footer class="note"><p>Figures computed by analytics/performance.py; all rates are per cent of '
                 "equity unless marked; money in US dollars.</p></footer></body></html>")
    return "\n".join(parts)


def build_summary(
    *,
    report: PerformanceReport,
    title: str,
    meta: Mapping[str, Any],
    walk_forward: Sequence[Mapping[str, Any]] | None = None,
    calibration: Mapping[str, Any] | None = None,
    comparison: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What summary.json holds: ``performance`` is exactly ``report.to_dict()``."""
    return {
        "title": title,
        "meta": _plain(meta),
        "performance": report.to_dict(),
        "walk_forward": _plain(list(walk_forward)) if walk_forward is not None else None,
        "calibration": _plain(calibration) if calibration is not None else None,
        "comparison": _plain(comparison) if comparison is not None else None,
    }


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    # owner-only: a report shows the account's equity and every trade
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_report(
    out_dir: Path,
    *,
    report: PerformanceReport,
    equity_curve: Iterable[Any],
    trades: Iterable[Any],
    title: str,
    meta: Mapping[str, Any],
    walk_forward: list[dict[str, Any]] | None = None,
    calibration: dict[str, Any] | None = None,
    comparison: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.json`` into ``out_dir`` (created if needed).

    ``report`` should come from :func:`analytics.performance.compute_performance` over the same
    ``equity_curve`` and ``trades``. ``meta`` is shown in the header (period, symbols,
    profile, strategies, commission and slippage models...). ``walk_forward`` adds a table of
    windows (train/test dates and out-of-sample metrics, nested dicts become ``a.b`` columns);
    ``calibration`` = ``{"bins": [...], "brier": x, "ece": y}`` (bins as
    ``ai_model.reliability_table`` makes them) adds a reliability diagram; ``comparison``
    (a backtest's buy-and-hold, benchmark, random-entry and capital figures) adds a table.
    Returns ``(html_path, json_path)``. Raises ``ValueError`` on malformed input before
    writing anything.
    """
    out_dir = Path(out_dir)
    equity_curve = list(equity_curve)
    trades = list(trades)
    page = render_html(report=report, equity_curve=equity_curve, trades=trades, title=title, meta=meta,
                       walk_forward=walk_forward, calibration=calibration, comparison=comparison)
    summary = json.dumps(
        build_summary(report=report, title=title, meta=meta, walk_forward=walk_forward, calibration=calibration,
                      comparison=comparison),
        indent=2,
        allow_nan=False,
    )
    private_dir(out_dir)
    html_path, json_path = out_dir / HTML_NAME, out_dir / JSON_NAME
    _atomic_write(json_path, summary + "\n")
    _atomic_write(html_path, page)
    log.info("report_written", html=str(html_path), json=str(json_path), trades=len(trades),
             points=report.points, html_bytes=len(page))
    return html_path, json_path
