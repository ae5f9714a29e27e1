#!/usr/bin/env python3
"""Draws docs/bench/traversal.svg from the benches' results.tsv (no third-party packages).

    python3 docs/bench/plot.py [RESULTS_TSV ...] > docs/bench/traversal.svg

RESULTS_TSV defaults to $CARGO_TARGET_DIR/silograph-bench/results.tsv (or target/…). Lines are
`bench  group  variant  metric  value`; the last value of each (group, variant, metric) wins, so
several runs (normal, --features bench-null-cipher, --features bench-sqlcipher) can share a file.
One panel per Enron query: a bar per variant for p50 and a tick for p99, on a log scale (µs).
"""
import math
import os
import sys

paths = sys.argv[1:] or [
    os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "silograph-bench", "results.tsv")
]
vals = {}
for p in paths:
    for line in open(p):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 5 or parts[0] != "traversal":
            continue
        _, group, variant, metric, value = parts
        vals[(group, variant, metric)] = float(value)

panels = [("enron_q1", "q1 out-neighbours (1000 seeds)"),
          ("enron_q2", "q2 ≤2-hop reach (1000 seeds)"),
          ("enron_q3", "q3 ≤3-hop reach (200 seeds)")]
order = ["petgraph-csr-memory", "silograph-null-cipher/cache", "silograph-aes-gcm/cache",
         "silograph-null-cipher/no-cache", "silograph-aes-gcm/no-cache", "redb-plaintext",
         "sqlite-plaintext", "sqlcipher-rawkey"]
colors = {"petgraph": "#999999", "silograph-aes": "#1f77b4", "silograph-null": "#9ecae1",
          "redb": "#2ca02c", "sqlite": "#ff7f0e", "sqlcipher": "#d62728"}


def color(v):
    for k, c in colors.items():
        if v.startswith(k):
            return c
    return "#555555"


variants = [v for v in order if any((g, v, "p50_us") in vals for g, _ in panels)]
variants += sorted({v for (g, v, m) in vals if g.startswith("enron_") and v not in variants})
bar_h, gap, left, width, label_w = 16, 4, 230, 420, 60
panel_h = len(variants) * (bar_h + gap) + 50
H = panel_h * len(panels) + 40
W = left + width + label_w + 20
lo, hi = 0.05, 2e5
scale = lambda us: left + width * (math.log10(max(us, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="10" y="18" font-size="13" font-weight="bold">silograph vs peers, Enron, warm per-query latency '
       f'(bar = p50, tick = p99, µs, log scale)</text>']
y0 = 40
for group, title in panels:
    out.append(f'<text x="10" y="{y0 + 12}" font-weight="bold">{title}</text>')
    axis_y = y0 + 20
    for d in range(-1, 6):
        x = scale(10 ** d)
        out.append(f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{y0 + panel_h - 20}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{x:.1f}" y="{axis_y - 2}" text-anchor="middle" fill="#777">{10 ** d:g}</text>')
    y = axis_y + 4
    for v in variants:
        p50 = vals.get((group, v, "p50_us"))
        p99 = vals.get((group, v, "p99_us"))
        out.append(f'<text x="{left - 6}" y="{y + bar_h - 4}" text-anchor="end">{v}</text>')
        if p50 is not None:
            out.append(f'<rect x="{left}" y="{y}" width="{scale(p50) - left:.1f}" height="{bar_h}" fill="{color(v)}"/>')
            out.append(f'<text x="{left + width + 6}" y="{y + bar_h - 4}">{p50:.3g}</text>')
        if p99 is not None:
            x = scale(p99)
            out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + bar_h}" stroke="black" stroke-width="2"/>')
        y += bar_h + gap
    y0 += panel_h
out.append("</svg>")
print("\n".join(out))
