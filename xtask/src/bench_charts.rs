//! Charts of the benches whose figures come from another process (the
//! route-table bench of the agent crate, the XDP bench binary of the tests
//! crate): they write raw JSON, and these functions turn it into a
//! [`Figure`] with the shared [`crate::plot`] writer.
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{
    bench_stores,
    plot::{BarSeries, Figure, LineSeries, Panel},
};

/// `cargo xtask plot` on the raw output of a bench binary (not a
/// [`Figure`]): the chart `bench routes --plot` / `bench xdp --plot` would
/// draw from it. `None` when the file is neither.
pub fn from_raw(path: &Path) -> Result<Option<Figure>> {
    let doc = read(path)?;
    let mut fig = if doc.get("modes").is_some() {
        xdp(path)?
    } else if doc.get("sizes").is_some() {
        routes(Some(path), &[])?
    } else {
        return Ok(None);
    };
    // Relative to the workspace (the current directory) when inside it.
    let cwd = std::env::current_dir().unwrap_or_default();
    fig.notes.push(format!(
        "drawn from {} (raw figures of the bench binary)",
        path.strip_prefix(&cwd).unwrap_or(path).display()
    ));
    Ok(Some(fig))
}

fn read(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// `(routes, field)` of each size with the field present; sizes without
/// routes (the baseline) are left out of the log-scale curves.
fn curve(sizes: &[Value], field: &str) -> Vec<(f64, f64)> {
    sizes
        .iter()
        .filter_map(|s| Some((s["routes"].as_f64()?, s[field].as_f64()?)))
        .filter(|(n, _)| *n > 0.0)
        .collect()
}

fn line(name: &str, points: Vec<(f64, f64)>) -> Option<LineSeries> {
    (!points.is_empty()).then(|| LineSeries {
        name: name.into(),
        points,
    })
}

/// `cargo xtask bench routes --plot`: route-scale curves from the agent's
/// route-table bench (`raw`, absent with `--stores-only`) and the change
/// latency per config source.
pub fn routes(raw: Option<&Path>, stores: &[(&str, bench_stores::Figures)]) -> Result<Figure> {
    let mut fig = Figure::new("bench routes: route changes and memory against the route count");
    // The route counts are chosen by the environment, not the command line.
    if let Ok(sizes) = std::env::var("SLUICE_BENCH_SIZES") {
        fig.notes.push(format!("SLUICE_BENCH_SIZES={sizes}"));
    }
    if let Some(raw) = raw {
        let doc = read(raw)?;
        let sizes = doc["sizes"]
            .as_array()
            .with_context(|| format!("{}: no \"sizes\"", raw.display()))?;
        fig.panels.push(Panel::Lines {
            title: "One-route change → in effect".into(),
            x_label: "HTTPRoutes".into(),
            y_label: "milliseconds".into(),
            log_x: true,
            log_y: true,
            series: [
                line("in process, change→swap p50", curve(sizes, "change_p50_ms")),
                line("in process, change→swap max", curve(sizes, "change_max_ms")),
                line(
                    "agent, file change→in effect p50",
                    curve(sizes, "agent_change_p50_ms"),
                ),
            ]
            .into_iter()
            .flatten()
            .collect(),
        });
        fig.panels.push(Panel::Lines {
            title: "Cold load and agent start".into(),
            x_label: "HTTPRoutes".into(),
            y_label: "milliseconds".into(),
            log_x: true,
            log_y: true,
            series: [
                line("cold load (in process)", curve(sizes, "cold_ms")),
                line("agent start → ready", curve(sizes, "agent_ready_ms")),
            ]
            .into_iter()
            .flatten()
            .collect(),
        });
        fig.panels.push(Panel::Lines {
            title: "Memory".into(),
            x_label: "HTTPRoutes".into(),
            y_label: "RSS (MB)".into(),
            log_x: true,
            log_y: false,
            series: [
                line("configuration state", curve(sizes, "state_rss_mb")),
                line("agent", curve(sizes, "agent_rss_mb")),
            ]
            .into_iter()
            .flatten()
            .collect(),
        });
    }
    if !stores.is_empty() {
        let names = ["p50", "p90", "max"];
        fig.panels.push(Panel::Bars {
            title: "One-route change → in effect per config source, 5,000 routes".into(),
            y_label: "milliseconds".into(),
            categories: stores.iter().map(|(n, _)| (*n).to_owned()).collect(),
            series: names
                .iter()
                .map(|&q| BarSeries {
                    name: q.into(),
                    values: stores
                        .iter()
                        .map(|(_, f)| {
                            Some(match q {
                                "p50" => f.p50,
                                "p90" => f.p90,
                                _ => f.max,
                            })
                        })
                        .collect(),
                })
                .collect(),
            reference: None,
            log_y: false,
        });
    }
    Ok(fig)
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// `cargo xtask bench xdp --plot`: drop cost per mode from the runs that
/// `sluice-bench-xdp --json` wrote (medians, with min and max).
pub fn xdp(raw: &Path) -> Result<Figure> {
    let doc = read(raw)?;
    let modes = doc["modes"]
        .as_array()
        .with_context(|| format!("{}: no \"modes\"", raw.display()))?;
    let mut fig =
        Figure::new("bench xdp: receive CPU per dropped SYN, XDP against iptables/nftables");
    fig.notes.push(format!(
        "{} packets per run, {} run(s) per mode (interleaved), veth between two network namespaces",
        doc["packets"], doc["runs"]
    ));
    let categories: Vec<String> = modes
        .iter()
        .map(|m| m["mode"].as_str().unwrap_or("?").to_owned())
        .collect();
    let per_packet: Vec<Vec<f64>> = modes.iter().map(|m| numbers(&m["ns_per_packet"])).collect();
    let stat = |f: fn(&[f64]) -> Option<f64>| -> Vec<Option<f64>> {
        per_packet.iter().map(|v| f(v)).collect()
    };
    let min = |v: &[f64]| v.iter().copied().reduce(f64::min);
    let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
    fig.panels.push(Panel::Bars {
        title: "Receive CPU per dropped packet (NAPI thread time)".into(),
        y_label: "ns per packet".into(),
        categories: categories.clone(),
        series: vec![
            BarSeries {
                name: "min".into(),
                values: stat(min),
            },
            BarSeries {
                name: "median".into(),
                values: stat(median),
            },
            BarSeries {
                name: "max".into(),
                values: stat(max),
            },
            BarSeries {
                name: "XDP program (BPF stats)".into(),
                values: modes
                    .iter()
                    .map(|m| median(&numbers(&m["bpf_ns_per_run"])))
                    .collect(),
            },
        ],
        reference: None,
        log_y: false,
    });
    let base = per_packet.first().and_then(|v| median(v));
    fig.panels.push(Panel::Bars {
        title: format!(
            "{} ÷ mode, medians (above 1: cheaper than it; dashed: 1.0)",
            categories.first().map_or("first mode", String::as_str)
        ),
        y_label: "cost ratio".into(),
        categories,
        series: vec![BarSeries {
            name: "ratio".into(),
            values: per_packet
                .iter()
                .map(|v| Some(base? / median(v)?))
                .collect(),
        }],
        reference: Some(1.0),
        log_y: false,
    });
    Ok(fig)
}
