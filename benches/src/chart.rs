//! A hand-written SVG line chart of latency against offered load (one line per side), for
//! the report. The latency axis is logarithmic: a saturated server's latency grows by orders
//! of magnitude, and both the flat part and the knee must stay readable.

use std::fmt::Write as _;

/// One line: a name and its points `(offered calls/s, latency ms)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart as a standalone SVG document. Points with a latency of 0 (nothing answered)
/// are left out.
pub fn latency_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    let points = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|&(x, y)| x.is_finite() && y.is_finite() && y > 0.0)
    };
    let x_max = points().map(|(x, _)| x).fold(0.0_f64, f64::max).max(1.0);
    let y_min = points().map(|(_, y)| y).fold(f64::INFINITY, f64::min);
    let y_max = points().map(|(_, y)| y).fold(0.0_f64, f64::max);
    // Whole decades around the data.
    let (lo, hi) = if y_max > 0.0 {
        (
            y_min.log10().floor(),
            y_max.log10().ceil().max(y_min.log10().floor() + 1.0),
        )
    } else {
        (0.0, 1.0)
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / x_max * plot_w;
    let py = |y: f64| TOP + plot_h - (y.log10() - lo) / (hi - lo) * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Axes and grid.
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    let mut decade = lo;
    while decade <= hi + 1e-9 {
        let y = py(10f64.powf(decade));
        let label = 10f64.powf(decade);
        let label = if label >= 1.0 {
            format!("{label:.0}")
        } else {
            format!("{label}")
        };
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0
        );
        decade += 1.0;
    }
    for i in 0..=5 {
        let x = x_max * f64::from(i) / 5.0;
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#eee"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{3:.0}</text>"##,
            px(x),
            TOP + plot_h,
            TOP + plot_h + 16.0,
            x
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (calls/s)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    // Lines, points and the legend.
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| x.is_finite() && y.is_finite() && y > 0.0)
            .collect();
        if !pts.is_empty() {
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            for &(x, y) in &pts {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                    px(x),
                    py(y)
                );
            }
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = WIDTH - RIGHT + 15.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_on_a_log_axis() {
        let svg = latency_chart(
            "p99 <latency>",
            "p99 ms",
            &[
                Series {
                    name: "quire".into(),
                    points: vec![(100.0, 2.0), (200.0, 3.0), (400.0, 250.0)],
                },
                Series {
                    name: "notion & co".into(),
                    points: vec![(100.0, 8.0), (200.0, 0.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // The point with no answer is left out: 3 + 1 circles.
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("p99 &lt;latency&gt;") && svg.contains("notion &amp; co"));
        // Decades 1, 10, 100, 1000 label the latency axis.
        for label in [">1<", ">10<", ">100<", ">1000<"] {
            assert!(svg.contains(label), "{label}");
        }
        // Higher latency is drawn higher up (smaller y).
        let ys: Vec<f64> = svg
            .match_indices("<circle cx=")
            .map(|(i, _)| {
                let rest = &svg[i..];
                let cy = rest.split("cy=\"").nth(1).unwrap();
                cy[..cy.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert!(ys[0] > ys[1] && ys[1] > ys[2], "{ys:?}");
    }

    #[test]
    fn an_empty_chart_is_still_a_document() {
        let svg = latency_chart("t", "ms", &[]);
        assert!(svg.contains("</svg>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
