//! The plan for people: a table on stdout and the RPC graph in Graphviz DOT
//! (functions sized by CPU share, edges weighted by calls, fused groups as
//! clusters, cold edges dashed, edges without evidence dotted).

use std::fmt::Write as _;

use super::Plan;

/// The human summary of a plan.
pub fn table(p: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:<40} {:>12} {:>14} {:>10} {:>6}",
        "group root", "members", "RPCs removed", "cost removed", "image KB", "CPU"
    );
    for g in &p.groups {
        let mut note = String::new();
        if !g.exact {
            note.push_str(" (heuristic)");
        }
        if g.kept_from_previous {
            note.push_str(" (kept)");
        }
        let _ = writeln!(
            s,
            "{:<16} {:<40} {:>12.0} {:>11.0} us {:>10.1} {:>5.1}%{note}",
            g.root,
            g.members.join(" + "),
            g.removed_calls,
            g.removed_cost_us,
            g.image_bytes as f64 / 1024.0,
            100.0 * g.cpu
        );
    }
    let _ = writeln!(s, "\nedges:");
    for e in &p.edges {
        let seen = match e.evidence {
            Some(ev) => format!(" ({})", ev.describe()),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "  {:<16} -> {:<16} {:>10.0} calls {:>7.2}% of caller  {}{seen}",
            e.caller,
            e.callee,
            e.calls,
            100.0 * e.share,
            e.status
        );
        if let Some(r) = &e.reason {
            let _ = writeln!(s, "      {r}");
        }
    }
    let _ = writeln!(s, "\ndecisions:");
    for d in &p.decisions {
        let _ = writeln!(s, "  {} <- {}: {}", d.root, d.function, d.reason);
    }
    let _ = writeln!(
        s,
        "\nremoved RPC cost: {:.0} us per profile window (RPC cost {} us)",
        p.objective_us, p.options.rpc_cost_us
    );
    s
}

fn id(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\\\""))
}

/// The RPC graph with the plan's groups, in Graphviz DOT.
pub fn dot(p: &Plan) -> String {
    let mut s = String::from("digraph rpc {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    let max_calls = p.edges.iter().map(|e| e.calls).fold(1.0, f64::max);
    for (i, g) in p
        .groups
        .iter()
        .filter(|g| g.removed_calls > 0.0)
        .enumerate()
    {
        let _ = writeln!(
            s,
            "  subgraph cluster_{i} {{\n    label={};\n    style=dashed; color=blue;",
            id(&format!("fused: {}", g.root))
        );
        for m in &g.members {
            let _ = writeln!(s, "    {};", id(&format!("{}@{}", m, g.root)));
        }
        s.push_str("  }\n");
    }
    for f in &p.functions {
        let size = 0.6 + 2.0 * f.cpu.sqrt();
        let _ = writeln!(
            s,
            "  {} [label={}, width={size:.2}, height={:.2}];",
            id(&f.name),
            id(&format!("{}\\n{:.1}% CPU", f.name, 100.0 * f.cpu)),
            size / 2.0
        );
    }
    for g in p.groups.iter().filter(|g| g.removed_calls > 0.0) {
        for m in &g.members {
            let _ = writeln!(
                s,
                "  {} [label={}, style=\"rounded,filled\", fillcolor=lightblue];",
                id(&format!("{}@{}", m, g.root)),
                id(m)
            );
        }
        // The calls that run in-process inside this group's image.
        let inside = |n: &String| g.members.contains(n);
        for e in p
            .edges
            .iter()
            .filter(|e| inside(&e.caller) && inside(&e.callee))
        {
            let _ = writeln!(
                s,
                "  {} -> {} [color=blue];",
                id(&format!("{}@{}", e.caller, g.root)),
                id(&format!("{}@{}", e.callee, g.root))
            );
        }
    }
    for e in &p.edges {
        let width = 1.0 + 4.0 * e.calls / max_calls;
        let style = match e.status.as_str() {
            "cold" => "dashed",
            "no evidence" => "dotted",
            _ => "solid",
        };
        let _ = writeln!(
            s,
            "  {} -> {} [label={}, penwidth={width:.1}, style={style}];",
            id(&e.caller),
            id(&e.callee),
            id(&format!("{:.0}", e.calls))
        );
    }
    s.push_str("}\n");
    s
}
