"""Draws docs/benchmarks-embed.png from the embedding rows of target/bench/report.json:
sentences per second of each provider and anchor, per workload (median bar, min-max
whisker). Run by `cargo xtask bench` in .dp-assets/bench-venv (matplotlib, pinned in
xtask/requirements/bench-embed.txt; it ships its own DejaVu fonts).

Usage: plot_embed.py REPORT_JSON OUTPUT_PNG
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Workload key -> title, in plot order (the ids are embed.throughput.<key>.<pair>).
WORKLOADS = [
    ("short_b32", "short texts, 32 per call"),
    ("short_b1", "short texts, 1 per call"),
    ("long_b32", "long texts (256 tokens), 32 per call"),
    ("long_b1", "long texts (256 tokens), 1 per call"),
]
COLORS = {
    "dp candle": "#1f77b4",
    "dp onnx": "#2ca02c",
    "sentence-transformers": "#d62728",
    "Python onnxruntime": "#ff7f0e",
}


def main() -> None:
    report_path, output = sys.argv[1], sys.argv[2]
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    group = report["groups"]["embed"]
    rows = {row["id"]: row for row in group["rows"]}
    fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(4.2 * len(WORKLOADS), 4.2))
    for ax, (key, title) in zip(axes, WORKLOADS):
        sides = {}
        for pair in ("candle_vs_st", "onnx_vs_ort", "onnx_vs_st"):
            row = rows.get(f"embed.throughput.{key}.{pair}")
            if row is None:
                continue
            for side in (row["ours"], row["anchor"]):
                sides.setdefault(side["label"], side)
        labels = [label for label in COLORS if label in sides]
        medians = [sides[label]["median"] for label in labels]
        lows = [sides[label]["median"] - sides[label]["min"] for label in labels]
        highs = [sides[label]["max"] - sides[label]["median"] for label in labels]
        bars = ax.bar(
            range(len(labels)),
            medians,
            yerr=[lows, highs],
            capsize=4,
            color=[COLORS[label] for label in labels],
        )
        for bar, value in zip(bars, medians):
            ax.annotate(
                f"{value:.0f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("sentences/s (higher is better)", fontsize=8)
        ax.margins(y=0.15)
    machine = group["machine"]
    fig.suptitle(
        f"all-MiniLM-L6-v2 embedding throughput, 2 threads -- {machine['cpu']}, "
        f"{machine['cores']} cores -- {group['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(output, dpi=110)


if __name__ == "__main__":
    main()
