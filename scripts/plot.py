#!/usr/bin/env python3
"""Minimal SVG charts from faasfuse benchmark CSVs, with no plotting
library: grouped bars (log scale) or lines (log-log).

  plot.py bars  CSV OUT.svg LABEL_COLUMN VALUE_COLUMN... [--title T] [--unit U]
  plot.py lines CSV OUT.svg X_COLUMN Y_COLUMN... [--title T] [--unit U]
"""
import csv
import math
import sys

COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948"]
W, H, L, R, T, B = 760, 420, 80, 180, 40, 70


def log_axis(lo, hi):
    lo, hi = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return lo, max(hi, lo + 1)


def header(title):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
            '<rect width="100%" height="100%" fill="white"/>',
            f'<text x="{W/2}" y="22" text-anchor="middle" font-size="15">{title}</text>']


def y_ticks(out, lo, hi, unit):
    for e in range(lo, hi + 1):
        y = T + (H - T - B) * (1 - (e - lo) / (hi - lo))
        out.append(f'<line x1="{L}" x2="{W-R}" y1="{y}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{L-6}" y="{y+4}" text-anchor="end">1e{e} {unit}</text>')


def legend(out, names):
    for i, n in enumerate(names):
        y = T + 18 * i
        out.append(f'<rect x="{W-R+12}" y="{y}" width="12" height="12" fill="{COLORS[i % len(COLORS)]}"/>')
        out.append(f'<text x="{W-R+30}" y="{y+10}">{n}</text>')


def ypos(v, lo, hi):
    return T + (H - T - B) * (1 - (math.log10(v) - lo) / (hi - lo))


def bars(rows, label, cols, title, unit):
    vals = [float(r[c]) for r in rows for c in cols if float(r[c]) > 0]
    lo, hi = log_axis(min(vals), max(vals))
    out = header(title)
    y_ticks(out, lo, hi, unit)
    gw = (W - L - R) / len(rows)
    bw = gw * 0.8 / len(cols)
    for i, r in enumerate(rows):
        x0 = L + gw * i + gw * 0.1
        for j, c in enumerate(cols):
            v = float(r[c])
            if v <= 0:
                continue
            y = ypos(v, lo, hi)
            out.append(f'<rect x="{x0+bw*j:.1f}" y="{y:.1f}" width="{bw*0.9:.1f}" height="{H-B-y:.1f}" fill="{COLORS[j % len(COLORS)]}"><title>{c}: {v}</title></rect>')
        out.append(f'<text x="{L+gw*i+gw/2:.1f}" y="{H-B+18}" text-anchor="middle">{r[label]}</text>')
    legend(out, cols)
    return out + ["</svg>"]


def lines(rows, xcol, cols, title, unit):
    xs = [float(r[xcol]) for r in rows]
    vals = [float(r[c]) for r in rows for c in cols if float(r[c]) > 0]
    xlo, xhi = log_axis(min(xs), max(xs))
    lo, hi = log_axis(min(vals), max(vals))
    out = header(title)
    y_ticks(out, lo, hi, unit)
    xpos = lambda v: L + (W - L - R) * (math.log10(v) - xlo) / (xhi - xlo)
    for e in range(xlo, xhi + 1):
        out.append(f'<text x="{xpos(10**e):.1f}" y="{H-B+18}" text-anchor="middle">1e{e}</text>')
    out.append(f'<text x="{(L+W-R)/2}" y="{H-B+40}" text-anchor="middle">{xcol}</text>')
    for j, c in enumerate(cols):
        pts = [(xpos(float(r[xcol])), ypos(float(r[c]), lo, hi)) for r in rows if float(r[c]) > 0]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        color = COLORS[j % len(COLORS)]
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
    legend(out, cols)
    return out + ["</svg>"]


def main():
    args = sys.argv[1:]
    opts = {"--title": "", "--unit": ""}
    for k in list(opts):
        if k in args:
            i = args.index(k)
            opts[k] = args[i + 1]
            del args[i:i + 2]
    kind, src, dst, key, *cols = args
    rows = [r for r in csv.DictReader(l for l in open(src) if not l.startswith("#"))]
    svg = (bars if kind == "bars" else lines)(rows, key, cols, opts["--title"], opts["--unit"])
    open(dst, "w").write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
