"""Render an :class:`EvalReport`: Markdown (the model card's layout), JSON, and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .cost import full_layouts, index_layouts
from .metrics import IR_KEYS, STS_KEYS
from .runner import ConfigResult, EvalReport

__all__ = ["from_json", "to_json", "to_markdown", "write_json", "write_plot"]

_ROWS = ("accuracy@1", "accuracy@10", "recall@100", "ndcg@10", "mrr@10", "map@100",
         "spearman", "pearson")
_LABELS = {
    "accuracy@1": "Accuracy@1", "accuracy@10": "Accuracy@10", "recall@100": "Recall@100",
    "ndcg@10": "**NDCG@10**", "mrr@10": "MRR@10", "map@100": "MAP@100",
    "spearman": "Spearman (cosine)", "pearson": "Pearson (cosine)",
}
_MIB = 1024 * 1024


def _label(c: ConfigResult, full_dim: int) -> str:
    if c.rescore_k is None:
        return f"{c.dim}"
    return f"{c.dim} → {full_dim} rescore@{c.rescore_k}"


def to_json(report: EvalReport) -> dict[str, Any]:
    """The report as plain data: metric keys under each configuration name."""
    configs: dict[str, Any] = {}
    for c in report.configs:
        configs[c.name] = {
            **{k: c.metrics.get(k) for k in IR_KEYS + STS_KEYS},
            "dim": c.dim, "rescore_k": c.rescore_k, "returned": c.returned,
            "bytes_per_doc": {"index_ram": c.ram_bytes, "cold": c.cold_bytes,
                              "total": c.total_bytes},
            "latency_ms": c.latency_ms,
        }
    return {
        "model": report.model, "model_path": report.model_path, "full_dim": report.full_dim,
        "encoder": report.encoder,
        "document_text": report.document_text,
        "store": report.store, "full_vectors_dtype": report.full_dtype,
        "data": {"beir": report.beir_source or None, "documents": report.n_docs,
                 "queries": report.n_queries, "sts": report.sts_source or None,
                 "sts_pairs": report.n_sts},
        "configurations": configs,
        "layouts_bytes_per_doc": {
            "index": {str(d): index_layouts(d) for d in sorted(
                {c.dim for c in report.configs}, reverse=True)},
            "full": full_layouts(report.full_dim),
        },
        "encode_seconds": report.encode_seconds,
        "query_encode_ms": report.query_encode_ms,
        "notes": report.notes,
    }


def from_json(data: dict[str, Any]) -> EvalReport:
    """Rebuild a report from :func:`to_json` output (to re-render tables or the plot)."""
    configs = [
        ConfigResult(
            # reports written before the rename say rerank_k
            name=name, dim=c["dim"], rescore_k=c.get("rescore_k", c.get("rerank_k")),
            metrics={k: c.get(k) for k in IR_KEYS + STS_KEYS},
            ram_bytes=c["bytes_per_doc"]["index_ram"], cold_bytes=c["bytes_per_doc"]["cold"],
            returned=c.get("returned"), latency_ms=c.get("latency_ms"),
        )
        for name, c in data["configurations"].items()
    ]
    src = data.get("data", {})
    return EvalReport(
        model=data["model"], full_dim=data["full_dim"],
        dims=[c.dim for c in configs if c.rescore_k is None],
        document_text=data["document_text"], store=data["store"], backend="",
        full_dtype=data["full_vectors_dtype"], configs=configs,
        beir_source=src.get("beir") or "", sts_source=src.get("sts") or "",
        n_docs=src.get("documents", 0), n_queries=src.get("queries", 0),
        n_sts=src.get("sts_pairs", 0), encode_seconds=data.get("encode_seconds", 0.0),
        query_encode_ms=data.get("query_encode_ms"), notes=list(data.get("notes", [])),
        model_path=data.get("model_path", ""), encoder=data.get("encoder", "torch"),
    )


def write_json(report: EvalReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n",
                          encoding="utf-8")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _ms(lat: dict[str, float] | None, key: str) -> str:
    return "–" if not lat else f"{lat[key]:.2f}"


def to_markdown(report: EvalReport) -> str:
    """Tables: metrics (rows) by configuration (columns), then bytes and latency per config."""
    lines: list[str] = []
    what = []
    if report.n_queries:
        what.append(f"{report.beir_source}: {report.n_docs} documents, "
                    f"{report.n_queries} queries")
    if report.n_sts:
        what.append(f"{report.sts_source}: {report.n_sts} STS pairs")
    runtime = "" if report.encoder == "torch" else f", encoder: {report.encoder}"
    lines.append(f"## Evaluation of `{report.model}` ({report.full_dim} dims{runtime})")
    lines.append("")
    lines.append("Data: " + "; ".join(what) + ".")
    if report.n_queries:
        doc = ("the title, a newline, then the text (`--with-title`)"
               if report.document_text != "text"
               else "the document's text alone (the title is not embedded; `--with-title` "
                    "prepends it)")
        lines.append(f"Encoded for a document: {doc}. For a query: its text. Each text is "
                     "encoded once at full dim, then truncated and renormalized per dim.")
    lines.append("")
    shown = [r for r in _ROWS if any(c.metrics.get(r) is not None for c in report.configs)]
    cols = report.configs
    lines.append("| Metric | " + " | ".join(_label(c, report.full_dim) for c in cols) + " |")
    lines.append("|:--|" + "--:|" * len(cols))
    for row in shown:
        cells = []
        for c in cols:
            cell = _fmt(c.metrics.get(row))
            if row in ("recall@100", "map@100") and c.returned is not None and c.returned < 100 \
                    and c.metrics.get(row) is not None:
                cell += "*"
            cells.append(cell)
        lines.append(f"| {_LABELS[row]} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Columns: a number is exact search over the vectors truncated to that dim; "
                 f"`d → {report.full_dim} rescore@k` is the two-stage funnel through `Retriever` "
                 f"and the `{report.store}` store: the top k on the d-dim index, rescored with "
                 f"the full vectors (float16 values, held as {report.full_dtype} by this "
                 "store). Metric "
                 "definitions: sentence-transformers' InformationRetrievalEvaluator.")
    if any(c.returned is not None and c.returned < 100 for c in cols):
        lines.append("\n\\* the configuration returns fewer than 100 documents per query "
                     "(a funnel returns at most its k; a corpus may hold fewer): @100 figures "
                     "count the documents returned.")
    lines.append("")
    lines.append("### Cost per document")
    lines.append("")
    lines.append("| Configuration | index in RAM (B/doc) | cold storage (B/doc) | total (B/doc) "
                 "| RAM per 1M docs | search p50 (ms) | search p95 (ms) |")
    lines.append("|:--|--:|--:|--:|--:|--:|--:|")
    for c in cols:
        lines.append(
            f"| {_label(c, report.full_dim)} | {c.ram_bytes} | {c.cold_bytes} | {c.total_bytes} "
            f"| {c.ram_bytes * 1_000_000 / _MIB:,.0f} MiB | {_ms(c.latency_ms, 'p50')} "
            f"| {_ms(c.latency_ms, 'p95')} |"
        )
    lines.append("")
    lines.append("Index vectors are float32 and searched in RAM; the full vectors of a funnel "
                 "are read only for its k candidates, so they can stay on disk (cold).")
    timed = [c.latency_ms for c in cols if c.latency_ms]
    if timed:
        lines.append(f"Search latency: one query at a time, k=10, {timed[0]['n']} queries, "
                     f"query vector given (encoding excluded), `{report.store}` store.")
    if report.query_encode_ms:
        q = report.query_encode_ms
        lines.append(f"Encoding one query (the same for every configuration): p50 "
                     f"{q['p50']:.2f} ms, p95 {q['p95']:.2f} ms ({q['n']} queries).")
    lines.append("")
    lines.append("### Bytes per document of each layout")
    lines.append("")
    lines.append("| Vector | float32 | float16 | int8 | binary |")
    lines.append("|:--|--:|--:|--:|--:|")
    for d in sorted({c.dim for c in cols}, reverse=True):
        lay = index_layouts(d)
        lines.append(f"| index, {d} dims | {lay['float32']} | {2 * d} | {lay['int8']} "
                     f"| {lay['binary']} |")
    full = full_layouts(report.full_dim)
    lines.append(f"| full vector for rescoring, {report.full_dim} dims | {full['float32']} "
                 f"| {full['float16']} | – | – |")
    if report.notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"- {n}" for n in report.notes)
    return "\n".join(lines) + "\n"


def write_plot(report: EvalReport, path: str | Path, metric: str = "ndcg@10") -> None:
    """PNG of ``metric`` against bytes per document, one point per configuration."""
    from .._deps import require

    mpl = require("matplotlib", "eval")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    exact = [c for c in report.configs if c.rescore_k is None and c.metrics.get(metric) is not None]
    funnels = [c for c in report.configs if c.rescore_k is not None]
    if not exact and not funnels:
        raise ValueError(f"no configuration has {metric}: the plot needs a retrieval evaluation")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), sharey=True, dpi=120)
    panels = (("ram_bytes", "index held in RAM (bytes per document, float32)"),
              ("total_bytes", "everything stored (bytes per document: index + full vectors)"))
    cmap = plt.get_cmap("viridis")
    fdims = sorted({c.dim for c in funnels}, reverse=True)
    ks = sorted({c.rescore_k for c in funnels if c.rescore_k})
    markers = "s^Dv<>ph"
    # funnels sharing a size are spread sideways a little so that every marker stays visible
    spread = {k: 1.0 + 0.035 * (i - (len(ks) - 1) / 2) for i, k in enumerate(ks)}
    for ax, (attr, xlabel) in zip(axes, panels, strict=True):
        ticks: set[int] = set()
        if exact:
            xs = [getattr(c, attr) for c in exact]
            ys = [c.metrics[metric] for c in exact]
            ticks.update(xs)
            ax.plot(xs, ys, "-o", color="black", lw=1.5, ms=7, label="exact search, d dims",
                    zorder=2)
            for c, x, y in zip(exact, xs, ys, strict=True):
                ax.annotate(f"d={c.dim}", (x, y), textcoords="offset points", xytext=(0, -16),
                            ha="center", fontsize=9)
        for i, d in enumerate(fdims):
            color = cmap(0.1 + 0.75 * i / max(1, len(fdims) - 1))
            for c in funnels:
                k = c.rescore_k
                if c.dim != d or k is None:
                    continue
                x = getattr(c, attr)
                ticks.add(x)
                ax.scatter(x * spread[k], c.metrics[metric], s=60, color=color,
                           marker=markers[ks.index(k) % len(markers)],
                           edgecolor="black", linewidth=0.6, zorder=3)
            ax.scatter([], [], marker="o", s=60, color=color, edgecolor="black",
                       label=f"{d} dims → rescored at {report.full_dim}")
        for k in ks:
            ax.scatter([], [], marker=markers[ks.index(k) % len(markers)], s=60,
                       color="white", edgecolor="black", label=f"rescore@{k} candidates")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([str(t) for t in sorted(ticks)], rotation=45, ha="right", fontsize=9)
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.06, y=0.08)
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    axes[0].set_ylabel(metric.upper())
    title = f"{report.model}: {metric.upper()} against bytes per document"
    if report.beir_source:
        title += f"\n{Path(report.beir_source).name}, {report.n_docs} documents, " \
                 f"{report.n_queries} queries"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
