"""``python main.py evaluate``: walk-forward, out-of-sample probabilities and how good they are.

It never reads a model file: it fits its own as it walks (:mod:`ai.walkforward`). Two
populations of ideas:

* ``sessions``: every session of every symbol that has a next one, as a long idea with
  the default bracket (``trading.stop_loss`` / ``trading.take_profit``, ``horizon``
  sessions): thousands of ideas, enough to measure calibration;
* ``proposals``: the sessions where a strategy of the configured pipeline proposes an entry
  (:mod:`ai.proposals`), each with its own bracket and holding horizon.

The CSV has one row per idea; the printout holds n, base rate, Brier score, Brier skill
against the past-only climatology (each symbol's hit rate of its ideas settled by the
decision session; rows before a symbol's first settled idea have none and are left out of
the skill), the calibration error beside its noise floor, AUC, and reliability tables per
symbol and pooled; a reliability plot is written beside the CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ai import calibration as cal
from ai.bracket_features import REVERSAL_HORIZONS, REVERSAL_WINDOW
from ai.correlated_floor import correlated_floor
from ai.daily_data import TrainingDataError, daily_files, read_daily_csv
from ai.ideas import DefaultBracket, Ideas, SymbolContext, build_ideas, market_close_for, symbol_context
from ai.walkforward import IdeaTable, PastRecord, block_ids, walk_forward
from market.market_data import BarSeries, exchange_day_numbers

Population = Literal["proposals", "sessions"]
CSV_COLUMNS = (
    "symbol", "decision_date", "probability", "entry_date", "entry_price", "stop_price",
    "target_price", "horizon_sessions", "label",
)
BENCHMARK = "SPY"
#: ``(symbol, bars, market close) -> (decision indices, stop fractions, target fractions, horizons)``
Proposer = Callable[[str, BarSeries, "np.ndarray | None"], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Evaluation:
    """Rows of every symbol (aligned arrays) and the walk-forward's record."""

    symbol: np.ndarray
    ideas: list[tuple[str, Ideas]]
    probability: np.ndarray
    label: np.ndarray  # the CSV's label: NaN wherever the horizon runs past the data
    climatology: np.ndarray
    groups: np.ndarray
    fits: list[dict[str, Any]]
    last_model: Any = None  # the walk's last logistic (ai.shrinkage.Logistic) and its weight
    last_weight: float = 0.0
    last_past_weight: float = 1.0  # the last refit's weight of the past hit rate against the walk
    last_drift_slope: tuple[float, float] = (0.0, 0.0)  # and its drift's regime slope and center
    last_reversal: Any = None  # and its short-term reversal (ai.bracket_features.Reversal)


def _iso(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def _day_number(text: str | None) -> int | None:
    return None if not text else date.fromisoformat(str(text)[:10]).toordinal() - date(1970, 1, 1).toordinal()


def load_series(data_dir: Path, symbols: Sequence[str] | None) -> tuple[dict[str, BarSeries], BarSeries | None]:
    """The daily bars of ``symbols`` (default: every symbol with a daily file) and of SPY when present."""

    files = daily_files(Path(data_dir))
    wanted = sorted(files) if not symbols else [s.strip().upper() for s in symbols if s.strip()]
    missing = [s for s in wanted if s not in files]
    if missing:
        raise TrainingDataError(f"--data {data_dir}: no daily file for {', '.join(missing)}")
    series = {s: read_daily_csv(files[s], s).bars for s in wanted}
    bench = series.get(BENCHMARK)
    if bench is None and BENCHMARK in files:
        bench = read_daily_csv(files[BENCHMARK], BENCHMARK).bars
    return series, bench


def evaluate(
    series: dict[str, BarSeries], bench: BarSeries | None, default: DefaultBracket,
    proposer: Proposer | None = None,
) -> Evaluation:
    """Build every symbol's ideas, walk forward over all of them pooled, and collect."""
    per_symbol: list[tuple[str, Ideas]] = []
    records: list[PastRecord] = []
    for symbol in sorted(series):
        bars = series[symbol]
        if len(bars) < 2:
            continue
        day = exchange_day_numbers(bars.ts)
        market = market_close_for(bars, bench)
        ctx = symbol_context(day, bars.open, bars.high, bars.low, bars.close, market, default)
        if proposer is None:
            decisions = np.arange(len(bars) - 1)
            stop, target, horizon = default.stop, default.target, default.horizon
        else:
            decisions, stop, target, horizon = proposer(symbol, bars, market)
        if len(decisions) == 0:
            continue
        records.append(_default_record(ctx, len(records)))
        per_symbol.append((symbol, build_ideas(ctx, bars.open, bars.high, bars.low, decisions, stop, target, horizon)))
    if not per_symbol:
        return Evaluation(np.array([], dtype=object), [], np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), [])
    cat = np.concatenate
    table = IdeaTable(
        day=cat([i.day for _, i in per_symbol]),
        settled_day=cat([i.settled_day for _, i in per_symbol]),
        label=cat([i.outcomes.known for _, i in per_symbol]),
        baseline=cat([i.baseline for _, i in per_symbol]),
        X=np.vstack([i.X for _, i in per_symbol]),
        horizon=cat([i.outcomes.horizon for _, i in per_symbol]),
        stop=cat([i.stop for _, i in per_symbol]),
        target=cat([i.target for _, i in per_symbol]),
        vol=cat([i.vol for _, i in per_symbol]),
        drift=cat([i.drift for _, i in per_symbol]),
        ratio=cat([i.ratio for _, i in per_symbol]),
        past_default=cat([i.past_default for _, i in per_symbol]),
        past_fall=cat([i.past_fall for _, i in per_symbol]),
        default=(default.stop, default.target, default.horizon),
        record=PastRecord(**{f.name: cat([getattr(r, f.name) for r in records]) for f in dataclasses.fields(PastRecord)}),
    )
    result = walk_forward(table)
    scored_label = cat([i.outcomes.label for _, i in per_symbol])
    symbol = cat([np.full(len(i.day), s, dtype=object) for s, i in per_symbol])
    codes = {s: k for k, (s, _) in enumerate(per_symbol)}
    groups = np.array([codes[s] for s in symbol], dtype=np.int64) * 1_000_000 + block_ids(table.day, table.horizon)
    return Evaluation(
        symbol=symbol, ideas=per_symbol, probability=result.probability, label=scored_label,
        climatology=cat([i.climatology for _, i in per_symbol]), groups=groups, fits=result.fits,
        last_model=result.last_model, last_weight=result.last_weight, last_past_weight=result.last_past_weight,
        last_drift_slope=result.last_drift_slope, last_reversal=result.last_reversal,
    )


def _default_record(ctx: SymbolContext, code: int) -> PastRecord:
    """Every session's default-bracket idea of one symbol (what the refits fit the walk's
    regime drift and the past hit rate's weight on)."""
    o = ctx.default_outcomes
    never = np.iinfo(np.int64).max
    settled_day = np.where(o.settled >= 0, ctx.day[np.maximum(o.settled, 0)], never)
    rows = o.decision
    ends = rows + ctx.default_outcomes.horizon.max(initial=1) if len(rows) else rows
    move = ctx.move[rows]
    move_day = np.where(np.isfinite(move), ctx.day[np.minimum(ends, len(ctx.day) - 1)], never)
    block = code * 1_000_000 + block_ids(ctx.day[rows], o.horizon)
    ahead = ctx.ahead[rows]
    last = len(ctx.day) - 1
    ends_h = np.minimum(rows[:, None] + np.array(REVERSAL_HORIZONS), last)  # the bar each move ends on
    ahead_day = np.where(np.isfinite(ahead), ctx.day[ends_h], never)
    return PastRecord(settled_day, o.known, ctx.past_default[rows], ctx.vol[rows], ctx.drift[rows],
                      ctx.ratio[rows], move, move_day, block, ctx.past_fall[rows], ahead, ahead_day)


def write_csv(path: Path, ev: Evaluation, keep: np.ndarray) -> int:
    """The rows of ``keep`` as the CSV of the issue; returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    offset = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(CSV_COLUMNS)
        for symbol, ideas in ev.ideas:
            o = ideas.outcomes
            n = len(o.decision)
            part = keep[offset : offset + n]
            prob = ev.probability[offset : offset + n]
            offset += n
            entry_day = ideas.entry_day
            for k in np.flatnonzero(part).tolist():
                label = o.label[k]
                out.writerow([
                    symbol, _iso(ideas.day[k]), f"{prob[k]:.6f}", _iso(entry_day[k]),
                    repr(float(o.entry_price[k])), repr(float(o.stop_price[k])),
                    repr(float(o.target_price[k])), int(o.horizon[k]),
                    "" if np.isnan(label) else int(label),
                ])
                written += 1
    return written


def report(ev: Evaluation, keep: np.ndarray) -> tuple[str, dict[str, Any]]:
    """The printed summary and the same numbers as a dict (pooled and per symbol)."""
    settled = keep & np.isfinite(ev.label)
    lines: list[str] = []
    numbers: dict[str, Any] = {"per_symbol": {}}
    tables: dict[str, list[dict[str, float]]] = {}

    def block(name: str, mask: np.ndarray) -> dict[str, Any]:
        s = cal.summary(ev.probability[mask], ev.label[mask], ev.climatology[mask], ev.groups[mask])
        tables[name] = cal.reliability_bins(ev.probability[mask], ev.label[mask])
        lines.append(
            f"{name}: n={s['n']} base rate {s['base_rate']:.3f} mean forecast {s['mean_forecast']:.3f} "
            f"Brier {s['brier']:.4f} | Brier skill vs past-only climatology {s['brier_skill']:+.4f} "
            f"(model {s['brier_model_same_rows']:.4f} vs climatology {s['brier_climatology']:.4f} on "
            f"{s['n_climatology']} rows) | ECE {s['ece']:.4f} (perfectly calibrated at this n: "
            f"mean {s['ece_floor_mean']:.4f}, 95th pct {s['ece_floor_p95']:.4f}) | AUC {s['auc']:.3f}"
        )
        lines.append(cal.render_table(f"reliability ({name}, 10 equal-count bins)", tables[name]))
        return s

    if settled.any():
        numbers["pooled"] = block("pooled", settled)
        extra, line = _correlated_floor(ev, settled)
        numbers["pooled"]["correlated_floor"] = extra
        if line:
            lines.insert(len(lines) - 1, line)  # under the pooled line, above its table
        for symbol in sorted(set(ev.symbol[settled].tolist())):
            numbers["per_symbol"][symbol] = block(symbol, settled & (ev.symbol == symbol))
    else:
        lines.append("no settled ideas in the selection: nothing to score")
    numbers["tables"] = tables
    weights = [f"{f['year']}:{f['weight']:.2f}" for f in ev.fits]
    lines.append("blend weight of the model against the shrunk climatology per refit year: " + " ".join(weights))
    past = [f"{f['year']}:{f['past_weight']:.2f}" for f in ev.fits]
    lines.append("weight of the past hit rate against the random walk per refit year (empirical Bayes): "
                 + " ".join(past))
    slopes = [f"{f['year']}:{f['drift_slope']:+.3f}" for f in ev.fits]
    lines.append("slope of the walk's drift (volatility units) on log(vol20/vol250) per refit year: "
                 + " ".join(slopes))
    rev = [f"{f['year']}:" + "/".join(f"{x:+.3f}" for x in f.get("reversal_slopes", [])) for f in ev.fits]
    lines.append(f"short-term reversal: slope of the move {'/'.join(map(str, REVERSAL_HORIZONS))} sessions "
                 f"after the entry on the past {REVERSAL_WINDOW} sessions' (volatility units) per refit year: "
                 + " ".join(rev))
    return "\n".join(lines), numbers


def _correlated_floor(ev: Evaluation, settled: np.ndarray) -> tuple[dict[str, float] | None, str | None]:
    """The pooled floor with the outcomes' measured cross-symbol dependence
    (:mod:`ai.correlated_floor`) and its printed line, beside the issue's independent floor,
    not instead. One calendar grid for every row: blocks as long as the longest horizon."""
    day = np.concatenate([i.day for _, i in ev.ideas])[settled]
    horizon = np.concatenate([i.outcomes.horizon for _, i in ev.ideas])[settled]
    found = correlated_floor(ev.probability[settled], ev.label[settled], ev.symbol[settled],
                             block_ids(day, np.full(len(day), horizon.max())))
    if found is None:
        return None, None
    line = (f"pooled ECE floor with the outcomes' cross-symbol dependence (block hit rates correlate "
            f"{found.observed_correlation:+.2f} across symbols; copula rho {found.latent_correlation:.2f}): "
            f"mean {found.mean:.4f}, 95th pct {found.p95:.4f} (informative: the floor above, one draw per "
            f"symbol and block, is the bar)")
    return ({"observed_correlation": found.observed_correlation, "latent_correlation": found.latent_correlation,
             "mean": found.mean, "p95": found.p95}, line)


def run(
    data_dir: Path, out: Path, *, symbols: Sequence[str] | None = None, start: str | None = None,
    end: str | None = None, population: Population = "proposals", default: DefaultBracket | None = None,
    proposer: Proposer | None = None,
) -> tuple[str, dict[str, Any]]:
    """Everything ``evaluate`` does; returns the printed text and the numbers."""
    default = default or DefaultBracket()
    series, bench = load_series(data_dir, symbols)
    if population == "proposals" and proposer is None:
        raise ValueError("the proposals population needs the pipeline's proposer")
    ev = evaluate(series, bench, default, proposer if population == "proposals" else None)
    day = np.concatenate([i.day for _, i in ev.ideas]) if ev.ideas else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(day), dtype=bool)
    lo, hi = _day_number(start), _day_number(end)
    if lo is not None:
        keep &= day >= lo
    if hi is not None:
        keep &= day <= hi
    rows = write_csv(out, ev, keep)
    text, numbers = report(ev, keep)
    plot = out.with_suffix(".reliability.png")
    cal.write_reliability_plot(plot, numbers["tables"], f"{population}: out-of-sample reliability ({rows} rows)")
    summary_path = out.with_suffix(".summary.json")
    numbers["fits"] = ev.fits
    summary_path.write_text(json.dumps(numbers, indent=1, default=float) + "\n", encoding="utf-8")
    head = (f"evaluate ({population}): {rows} rows -> {out}\n"
            f"reliability plot -> {plot}; numbers -> {summary_path}")
    return head + "\n" + text, numbers
