//! The charts, drawn with plotters' SVG backend into strings and inlined
//! in the page: the run timeline, the runqueue heat strip, horizontal
//! bars, distribution curves and time-series lines. Text is SVG `<text>`
//! in the viewer's sans-serif (plotters' estimate sizes it; no font file
//! is read). Each chart takes plain figures: reading documents is the
//! callers' business. A chart that cannot be drawn becomes a note.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::page::{esc, note};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Chart width in pixels (the page is 1250 px wide at most).
const WIDTH: u32 = 1200;
/// Room left of a chart for row names.
const LEFT: u32 = 150;

/// Series colours (the "tab10" set, distinguishable for most colour
/// vision; legends and tables name every series too).
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// The colour of series `i`.
pub(crate) fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// A legend line in HTML: a swatch and a name per series.
pub(crate) fn legend(names: &[String]) -> String {
    let mut s = String::from("<p class=\"legend\">");
    for (i, n) in names.iter().enumerate() {
        let RGBColor(r, g, b) = colour(i);
        s.push_str(&format!(
            "<span class=\"swatch\" style=\"background:#{r:02x}{g:02x}{b:02x}\"></span>{}",
            esc(n)
        ));
    }
    s.push_str("</p>\n");
    s
}

/// Draws `w` x `h` pixels with `draw` and returns the inline `<svg>`.
fn svg(label: &str, w: u32, h: u32, draw: impl FnOnce(&Area<'_>) -> Drawn) -> String {
    let mut buf = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        // Inline SVG in HTML needs no namespace; the page names no URL.
        Ok(()) => buf
            .replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
            .replacen(
                "<svg ",
                &format!("<svg role=\"img\" aria-label=\"{}\" ", esc(label)),
                1,
            ),
        Err(e) => note(&format!("the {label} chart could not be drawn: {e}")),
    }
}

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

/// Writes `labels` (y in chart coordinates, text) right-aligned left of
/// the chart's plotting area.
fn row_names<X, Y>(
    root: &Area<'_>,
    chart: &ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    x0: X::ValueType,
    labels: &[(Y::ValueType, String)],
) -> Drawn
where
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone,
    Y::ValueType: Clone,
{
    let style = font(15).pos(Pos::new(HPos::Right, VPos::Center));
    for (y, text) in labels {
        let (px, py) = chart.backend_coord(&(x0.clone(), y.clone()));
        root.draw(&Text::new(text.clone(), (px - 6, py), style.clone()))?;
    }
    Ok(())
}

/// A named span of time (a step), seconds.
pub(crate) struct Span {
    pub label: String,
    pub start: f64,
    pub end: Option<f64>,
}

/// A named moment (an event, a capture), seconds.
pub(crate) struct Mark {
    pub at: f64,
    pub label: String,
}

/// Steps as shaded spans with their boundaries as vertical lines and
/// names, events as numbered dots, captures as named triangles.
pub(crate) fn timeline(end: f64, steps: &[Span], events: &[Mark], captures: &[Mark]) -> String {
    let end = end.max(0.001);
    svg("run timeline", WIDTH, 240, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_left(LEFT)
            .x_label_area_size(35)
            .build_cartesian_2d(0f64..end, 0f64..3f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .max_light_lines(0)
            .y_labels(0)
            .x_desc("seconds since the plan started")
            .label_style(font(15))
            .draw()?;
        let shade = [RGBColor(225, 235, 248), RGBColor(240, 228, 210)];
        for (i, s) in steps.iter().enumerate() {
            let stop = s.end.unwrap_or(end);
            chart.draw_series([Rectangle::new(
                [(s.start, 2.1), (stop, 2.9)],
                shade[i % 2].filled(),
            )])?;
            for (x, c) in [(s.start, BLACK), (stop, RGBColor(120, 120, 120))] {
                chart.draw_series([PathElement::new(
                    vec![(x, 0.0), (x, 3.0)],
                    c.stroke_width(2),
                )])?;
            }
            chart.draw_series([Text::new(
                s.label.clone(),
                (s.start, 2.5),
                font(15).pos(Pos::new(HPos::Left, VPos::Center)),
            )])?;
        }
        for (i, e) in events.iter().enumerate() {
            let y = 1.2 + 0.3 * (i % 3) as f64;
            chart.draw_series([Circle::new((e.at, y), 4, colour(0).filled())])?;
            chart.draw_series([Text::new(
                e.label.clone(),
                (e.at, y),
                font(14).pos(Pos::new(HPos::Left, VPos::Bottom)),
            )])?;
        }
        for (i, c) in captures.iter().enumerate() {
            let y = 0.25 + 0.25 * (i % 3) as f64;
            chart.draw_series([TriangleMarker::new((c.at, y), 6, colour(3).filled())])?;
            chart.draw_series([Text::new(
                c.label.clone(),
                (c.at, y),
                font(14).pos(Pos::new(HPos::Left, VPos::Bottom)),
            )])?;
        }
        row_names(
            root,
            &chart,
            0.0,
            &[
                (2.5, "steps".into()),
                (1.5, "events (#)".into()),
                (0.5, "captures".into()),
            ],
        )
    })
}

/// A CPUs x time grid of small counts.
pub(crate) struct Heat {
    /// Row names, top first.
    pub rows: Vec<String>,
    /// Rows before which a group (LLC or node) starts, besides the first.
    pub breaks: Vec<usize>,
    /// Sample times, seconds, ascending.
    pub times: Vec<f64>,
    /// `cells[row][sample]`; `None`: not read in that sample.
    pub cells: Vec<Vec<Option<u32>>>,
    pub end: f64,
    pub steps: Vec<Mark>,
}

/// The colour of a count on a scale up to `max`: pale for 0, dark blue
/// for the most.
pub(crate) fn heat_colour(v: u32, max: u32) -> RGBColor {
    let t = f64::from(v.min(max)) / f64::from(max.max(1));
    let lerp = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
    RGBColor(lerp(236, 8), lerp(242, 48), lerp(250, 107))
}

/// The heat strip: a row per CPU, a column per sample, darker for more
/// runnable tasks; group boundaries as black lines, steps as red ones.
pub(crate) fn heat_strip(h: &Heat, max: u32) -> String {
    let n = h.rows.len().max(1);
    let end = h.end.max(0.001);
    let height = 80 + 18 * n as u32;
    svg("runqueue heat strip", WIDTH, height, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_left(LEFT)
            .margin_top(22)
            .x_label_area_size(35)
            .build_cartesian_2d(0f64..end, 0f64..n as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .y_labels(0)
            .x_desc("seconds since the plan started")
            .label_style(font(15))
            .draw()?;
        // A sample covers the time up to the next one.
        let step = h
            .times
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::INFINITY, f64::min);
        let last = if step.is_finite() { step } else { end / 50.0 };
        for (row, cells) in h.cells.iter().enumerate() {
            let y = (n - 1 - row) as f64;
            let rects = h.times.iter().enumerate().filter_map(|(j, &t)| {
                let v = cells.get(j).copied().flatten()?;
                let t1 = h.times.get(j + 1).copied().unwrap_or(t + last);
                Some(Rectangle::new(
                    [(t, y + 0.05), (t1, y + 0.95)],
                    heat_colour(v, max).filled(),
                ))
            });
            chart.draw_series(rects)?;
        }
        for &b in &h.breaks {
            let y = (n - b) as f64;
            chart.draw_series([PathElement::new(
                vec![(0.0, y), (end, y)],
                BLACK.stroke_width(2),
            )])?;
        }
        for s in &h.steps {
            chart.draw_series([PathElement::new(
                vec![(s.at, 0.0), (s.at, n as f64)],
                RED.stroke_width(2),
            )])?;
            chart.draw_series([Text::new(
                s.label.clone(),
                (s.at, n as f64),
                font(14).pos(Pos::new(HPos::Left, VPos::Bottom)),
            )])?;
        }
        let names: Vec<(f64, String)> = h
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| ((n - 1 - i) as f64 + 0.5, r.clone()))
            .collect();
        row_names(root, &chart, 0.0, &names)
    })
}

/// Horizontal bars, one per `(name, value)`, the value written at the
/// bar's end with `unit`.
pub(crate) fn hbars(label: &str, items: &[(String, f64)], unit: &str) -> String {
    let n = items.len().max(1);
    let max = items.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let top = if max > 0.0 { max * 1.2 } else { 1.0 };
    svg(label, WIDTH, 60 + 24 * n as u32, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_left(LEFT)
            .x_label_area_size(35)
            .build_cartesian_2d(0f64..top, 0f64..n as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .max_light_lines(0)
            .y_labels(0)
            .x_desc(unit)
            .label_style(font(15))
            .draw()?;
        for (i, (_, v)) in items.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            chart.draw_series([Rectangle::new(
                [(0.0, y + 0.15), (*v, y + 0.85)],
                colour(0).mix(0.8).filled(),
            )])?;
            chart.draw_series([Text::new(
                format!(" {v:.1}"),
                (*v, y + 0.5),
                font(14).pos(Pos::new(HPos::Left, VPos::Center)),
            )])?;
        }
        let names: Vec<(f64, String)> = items
            .iter()
            .enumerate()
            .map(|(i, (name, _))| ((n - 1 - i) as f64 + 0.5, name.clone()))
            .collect();
        row_names(root, &chart, 0.0, &names)
    })
}

/// Cumulative distributions, one curve per series of samples, on a log
/// x axis (latencies span decades).
pub(crate) fn cdf(label: &str, series: &[(String, Vec<f64>)], unit: &str) -> String {
    let all = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|x| x.is_finite());
    let hi = all.clone().fold(10.0, f64::max) * 1.5;
    let lo = all.fold(f64::INFINITY, f64::min).max(1.0).min(hi / 10.0);
    svg(label, WIDTH, 320, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_left(LEFT)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
        chart
            .configure_mesh()
            .max_light_lines(2)
            .x_labels(6)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc(unit)
            .y_desc("fraction of wakeups at or below")
            .label_style(font(15))
            .draw()?;
        for (i, (_, values)) in series.iter().enumerate() {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            let count = v.len() as f64;
            let points = v
                .iter()
                .enumerate()
                .map(|(k, x)| (x.max(lo), (k + 1) as f64 / count));
            chart.draw_series(LineSeries::new(points, colour(i).stroke_width(2)))?;
        }
        Ok(())
    })
}

/// An axis figure short enough for the label area: 16k, 2.5M, 0.5.
fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Lines over time, one per series of `(seconds, value)` points, with
/// step boundaries as vertical lines.
pub(crate) fn lines(
    label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y_desc: &str,
    end: f64,
    steps: &[Mark],
) -> String {
    let end = end.max(0.001);
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max);
    let top = if max > 0.0 { max * 1.15 } else { 1.0 };
    svg(label, WIDTH, 320, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_left(LEFT)
            .margin_top(22)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end, 0f64..top)?;
        chart
            .configure_mesh()
            .max_light_lines(2)
            .x_desc("seconds since the plan started")
            .y_desc(y_desc)
            .y_label_formatter(&|v| compact(*v))
            .label_style(font(15))
            .draw()?;
        for s in steps {
            chart.draw_series([PathElement::new(
                vec![(s.at, 0.0), (s.at, top)],
                RGBColor(120, 120, 120).stroke_width(1),
            )])?;
            chart.draw_series([Text::new(
                s.label.clone(),
                (s.at, top),
                font(14).pos(Pos::new(HPos::Left, VPos::Bottom)),
            )])?;
        }
        for (i, (_, points)) in series.iter().enumerate() {
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                colour(i).stroke_width(2),
            ))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_figures_stay_short() {
        let got: Vec<String> = [0.0, 0.5, 12.0, 1500.0, 16000.0, 2.5e6]
            .into_iter()
            .map(compact)
            .collect();
        assert_eq!(got, ["0", "0.5", "12", "1.5k", "16k", "2.5M"]);
    }

    #[test]
    fn charts_are_inline_svg_without_urls_and_escape_labels() {
        let s = timeline(
            4.0,
            &[Span {
                label: "step <1>".into(),
                start: 0.0,
                end: Some(4.0),
            }],
            &[Mark {
                at: 1.0,
                label: "1".into(),
            }],
            &[Mark {
                at: 2.0,
                label: "snap&shot".into(),
            }],
        );
        assert!(s.starts_with("<svg role=\"img\""), "{s}");
        assert!(!s.contains("http"), "{s}");
        assert!(
            s.contains("step &lt;1&gt;") && s.contains("snap&amp;shot"),
            "{s}"
        );
        assert_eq!(s.matches("<svg").count(), s.matches("</svg>").count());
        // Empty inputs draw an empty frame, not a panic.
        for chart in [
            hbars("bars", &[], "units/s"),
            cdf("cdf", &[], "us"),
            lines("lines", &[], "CPUs", 0.0, &[]),
            heat_strip(
                &Heat {
                    rows: vec![],
                    breaks: vec![],
                    times: vec![],
                    cells: vec![],
                    end: 0.0,
                    steps: vec![],
                },
                0,
            ),
        ] {
            assert!(chart.contains("<svg"), "{chart}");
        }
        assert_eq!(heat_colour(0, 4), RGBColor(236, 242, 250));
        assert_eq!(heat_colour(9, 4), RGBColor(8, 48, 107));
    }
}
