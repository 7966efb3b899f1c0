"""Reports: ``metrics.json`` and the paper's Table 2 / Table 3 layouts (``metrics.md``,
``metrics.csv``), and the τ and test-time-scaling sweeps as CSV + PNG (Figures 6 and 7).

Tables show percentages with two decimals, as the paper prints them; ``metrics.json`` keeps
fractions in [0, 1]. A metric that was not scored (a baseline without a mask or without a
diagnosis) prints as ``-``. Table 3's ``Avg.`` is the mean of the subset columns (the
paper's convention), whereas Table 2's overall numbers pool all samples.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from sim4seg._atomic import write_json, write_text
from sim4seg.data.subsets import SUBSETS, SubsetInfo

TABLE3_COLUMNS: tuple[tuple[str, str], ...] = tuple((s.name, s.column) for s in SUBSETS.values())
"""Table 3's columns: ``(subset, the paper's short name)`` in its order (from the subset registry)."""
METRICS: tuple[tuple[str, str], ...] = (("giou", "gIoU"), ("ciou", "cIoU"), ("acc", "Acc"))
"""Rows of Table 3 / columns of Table 2 (``dice`` is reported beside them)."""

Result = tuple[str, Mapping]
"""``(method name, metrics.json dict)``."""


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals; ``-`` for ``None``."""
    return "-" if value is None else f"{100.0 * value:.2f}"


def subset_columns(results: Sequence[Result], subsets: Mapping[str, SubsetInfo] | None = None) -> list[tuple[str, str]]:
    """The paper's ten columns, then any other subset found in ``results`` (by its title)."""
    known = dict(TABLE3_COLUMNS)
    extra = sorted({k for _, r in results for k in r.get("per_subset", {}) if k not in known})
    return list(TABLE3_COLUMNS) + [(k, subsets[k].column if subsets and k in subsets else k) for k in extra]


def _avg(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def table3_values(result: Mapping, columns: Sequence[tuple[str, str]], metric: str) -> list[float | None]:
    """One Table 3 row: the metric per subset column, then ``Avg.`` over the present subsets."""
    per = result.get("per_subset", {})
    values = [per[k][metric] if k in per else None for k, _ in columns]
    return values + [_avg(values)]


def markdown(results: Sequence[Result], subsets: Mapping[str, SubsetInfo] | None = None) -> str:
    """Table 2 (overall gIoU / cIoU / Acc per method) and Table 3 (per subset) as Markdown."""
    lines = ["Table 2 layout — overall (%):", "", "| Method | gIoU | cIoU | Acc |", "|---|---:|---:|---:|"]
    for name, r in results:
        o = r["overall"]
        lines.append(f"| {name} | {pct(o['giou'])} | {pct(o['ciou'])} | {pct(o['acc'])} |")
    lines += ["", "| Method | Dice | n | unparseable answers |", "|---|---:|---:|---:|"]
    for name, r in results:
        o = r["overall"]
        lines.append(f"| {name} | {pct(o['dice'])} | {o['n']} | {o['unparseable']} |")
    columns = subset_columns(results, subsets)
    head = [title for _, title in columns] + ["Avg."]
    lines += [
        "",
        "Table 3 layout — per subset (%):",
        "",
        "| Method | | " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * len(head),
    ]
    for name, r in results:
        for i, (key, label) in enumerate(METRICS):
            cells = [pct(v) for v in table3_values(r, columns, key)]
            lines.append(f"| {name if i == 0 else ''} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(results: Sequence[Result], subsets: Mapping[str, SubsetInfo] | None = None) -> str:
    """One CSV: ``method, metric, Overall, <Table 3 columns>, Avg.``; metrics gIoU, cIoU, Acc, Dice."""
    columns = subset_columns(results, subsets)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "metric", "Overall"] + [t for _, t in columns] + ["Avg."])
    for name, r in results:
        for key, label in METRICS + (("dice", "Dice"),):
            w.writerow([name, label, pct(r["overall"][key])] + [pct(v) for v in table3_values(r, columns, key)])
    return buf.getvalue()


def write_metrics(
    out: str | os.PathLike, summary: Mapping, method: str = "Sim4Seg", subsets: Mapping[str, SubsetInfo] | None = None
) -> list[Path]:
    """Write ``metrics.json`` (fractions), ``metrics.md`` and ``metrics.csv`` (percent) to ``out``."""
    out = Path(out)
    write_json(out / "metrics.json", dict(summary))
    write_text(out / "metrics.md", markdown([(method, summary)], subsets))
    write_text(out / "metrics.csv", csv_text([(method, summary)], subsets))
    return [out / "metrics.json", out / "metrics.md", out / "metrics.csv"]


# ---------------------------------------------------------------- sweeps


def _check_rows(rows: Sequence[Mapping], params: Mapping[str, tuple[str, ...]]) -> None:
    for i, row in enumerate(rows):
        p = row.get("param")
        if p not in params:
            raise ValueError(f"sweep row {i}: param must be one of {tuple(params)}, got {p!r}")
        missing = [k for k in ("value",) + params[p] if row.get(k) is None]
        if missing:
            raise ValueError(f"sweep row {i} ({p}): missing {', '.join(missing)}")


def _sweep_csv(path: Path, rows: Sequence[Mapping], fields: tuple[str, ...]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("param", "value") + tuple(f"{f}_pct" for f in fields))
    for row in sorted(rows, key=lambda r: (r["param"], r["value"])):
        w.writerow([row["param"], row["value"]] + [pct(row.get(f)) for f in fields])
    write_text(path, buf.getvalue())


def _panel(
    ax,
    rows: Sequence[Mapping],
    param: str,
    series: Sequence[tuple[str, str]],
    xlabel: str,
    title: str,
    xticklabels=None,
) -> None:
    """One sweep panel on the full 0–100 % axis (a 0.1-point wobble must not look like a trend), with the
    rows' 95 % bootstrap intervals (``<key>_ci``) as error bars where present."""
    pts = sorted((r for r in rows if r["param"] == param), key=lambda r: r["value"])
    xs = list(range(len(pts)))
    for i, (key, label) in enumerate(series):
        ys = [100.0 * r[key] for r in pts]
        cis = [r.get(f"{key}_ci") for r in pts]
        shift = (i - (len(series) - 1) / 2) * 0.08  # side by side, so that the error bars do not hide each other
        xi = [x + shift for x in xs]
        if all(ci is not None for ci in cis) and pts:
            err = [[y - 100.0 * lo for y, (lo, _) in zip(ys, cis)], [100.0 * hi - y for y, (_, hi) in zip(ys, cis)]]
            ax.errorbar(xi, ys, yerr=err, marker="o", capsize=3, label=f"{label} (95 % CI)")
        else:
            ax.plot(xi, ys, marker="o", label=label)
    ax.set_xticks(xs)
    ax.set_xticklabels([xticklabels(r["value"]) if xticklabels else str(r["value"]) for r in pts])
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, 100)
    ax.set_ylabel("score (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if pts:
        ax.legend(fontsize=8, loc="lower right")


def _ci_note(rows: Sequence[Mapping]) -> str:
    has = any(k.endswith("_ci") and v is not None for r in rows for k, v in r.items())
    return "; error bars: 95 % bootstrap intervals over the test samples" if has else ""


def save_figure(fig, path: Path) -> None:
    from sim4seg.eval.figures import save_figure as save

    save(fig, path)


def write_tau_sweep(out: str | os.PathLike, rows: Sequence[Mapping], stem: str = "tau_sweep") -> tuple[Path, Path]:
    """Figure 6: rows ``{"param": "topk"|"grid", "value", "giou", "ciou"}`` → ``stem.csv``, ``stem.png``.

    Panel (a): gIoU/cIoU against the number of selected cells (top-k, paper: 12–48);
    panel (b): against the grid resolution g×g (paper: 8–64).
    """
    from matplotlib.figure import Figure

    _check_rows(rows, {"topk": ("giou", "ciou"), "grid": ("giou", "ciou")})
    out = Path(out)
    _sweep_csv(out / f"{stem}.csv", rows, ("giou", "ciou"))
    fig = Figure(figsize=(9, 3.6))
    a, b = fig.subplots(1, 2)
    series = (("giou", "gIoU"), ("ciou", "cIoU"))
    _panel(a, rows, "topk", series, "top-k cells", "(a) number of selected cells")
    _panel(b, rows, "grid", series, "grid", "(b) grid resolution", lambda g: f"{g}×{g}")
    fig.suptitle("τ sweep" + _ci_note(rows), fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / f"{stem}.png")
    return out / f"{stem}.csv", out / f"{stem}.png"


def write_tts_sweep(out: str | os.PathLike, rows: Sequence[Mapping], stem: str = "tts_sweep") -> tuple[Path, Path]:
    """Figure 7: rows ``{"param": "m", "value", "acc"}`` and ``{"param": "n", "value", "giou", "ciou"}``.

    Panel (a): diagnosis accuracy against m (CoT paths); panel (b): gIoU/cIoU against n
    (region-mask perturbations). Writes ``stem.csv`` and ``stem.png``.
    """
    from matplotlib.figure import Figure

    _check_rows(rows, {"m": ("acc",), "n": ("giou", "ciou")})
    out = Path(out)
    _sweep_csv(out / f"{stem}.csv", rows, ("acc", "giou", "ciou"))
    fig = Figure(figsize=(9, 3.6))
    a, b = fig.subplots(1, 2)
    _panel(a, rows, "m", (("acc", "Acc"),), "m (CoT paths)", "(a) diagnosis accuracy vs m")
    _panel(b, rows, "n", (("giou", "gIoU"), ("ciou", "cIoU")), "n (masks per path)", "(b) segmentation vs n")
    fig.suptitle("test-time scaling sweep" + _ci_note(rows), fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / f"{stem}.png")
    return out / f"{stem}.csv", out / f"{stem}.png"


# ---------------------------------------------------------------- uncertainty


def write_uncertainty(out: str | os.PathLike, report: Mapping) -> list[Path]:
    """``uncertainty.json`` (``eval.calibration.uncertainty_report``) and, with a calibration,
    ``reliability.png``: accuracy per confidence bin against the diagonal, with the ECE in the title."""
    from matplotlib.figure import Figure

    out = Path(out)
    write_json(out / "uncertainty.json", dict(report))
    paths = [out / "uncertainty.json"]
    cal = report.get("calibration")
    if cal:
        fig = Figure(figsize=(4.2, 4.0))
        ax = fig.subplots()
        full = [b for b in cal["bins"] if b["n"]]
        ax.bar(
            [(b["lo"] + b["hi"]) / 2 for b in full],
            [b["accuracy"] for b in full],
            width=[(b["hi"] - b["lo"]) * 0.9 for b in full],
            color="#4c72b0",
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        for b in full:
            ax.annotate(
                str(b["n"]),
                ((b["lo"] + b["hi"]) / 2, b["accuracy"]),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                fontsize=7,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("confidence (agreement of the m answers)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"Reliability (n = {cal['n']}): ECE {100 * cal['ece']:.2f} %", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        save_figure(fig, out / "reliability.png")
        paths.append(out / "reliability.png")
    return paths


def uncertainty_lines(report: Mapping) -> list[str]:
    """What ``sim4seg evaluate`` prints about the uncertainty report."""
    lines = []
    cal, unc = report.get("calibration"), report.get("uncertainty_vs_error")
    if cal:
        lines.append(
            f"diagnosis confidence: ECE {100 * cal['ece']:.2f} % over {cal['n']} sample(s) "
            f"(mean confidence {pct(cal['mean_confidence'])} %, accuracy {pct(cal['accuracy'])} %)"
        )
    else:
        lines.append("diagnosis confidence: none in the predictions (a single answer per image: use --m 2 or more)")
    if unc:
        r = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
        lines.append(
            f"mean pixel uncertainty vs 1-IoU: Pearson {r(unc['pearson'])}, Spearman {r(unc['spearman'])} "
            f"over {unc['n']} sample(s)"
        )
    else:
        lines.append("pixel uncertainty: none in the predictions (one candidate mask per image: use m·n ≥ 2)")
    return lines
