//! The ratio plot: one panel per figure (connection rate, p50, p99, throughput), bars grouped
//! by number of Services, one bar per configuration, the baseline as a line at 1.0.
//!
//! Drawn with plotters into an RGB buffer and encoded with `png`. Text uses plotters' pure-Rust
//! `ab_glyph` renderer with DejaVu Sans read from disk (Debian's `fonts-dejavu-core`, installed
//! by `cargo xtask setup`), so nothing needs fontconfig or a network.

use std::{path::Path, sync::OnceLock};

use anyhow::{Context as _, anyhow};
use plotters::{
    prelude::*,
    style::{
        FontStyle,
        text_anchor::{HPos, Pos, VPos},
    },
};

use crate::report::{BASELINE, Medians, Row, baseline_of, ratios};

/// Where `fonts-dejavu-core` puts its fonts.
const FONT_DIR: &str = "/usr/share/fonts/truetype/dejavu";
const FONT: &str = "sans-serif";
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1000;

/// One colour per configuration, in table order (the baseline is the line at 1.0).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// One panel of the plot.
struct Panel {
    title: &'static str,
    value: fn(&Medians) -> Option<f64>,
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "short connections per second (higher is better)",
        value: |m| m.conn_rate,
    },
    Panel {
        title: "request/response latency p50 (lower is better)",
        value: |m| m.p50_us,
    },
    Panel {
        title: "request/response latency p99 (lower is better)",
        value: |m| m.p99_us,
    },
    Panel {
        title: "iperf3 bulk throughput (higher is better)",
        value: |m| m.gbps,
    },
];

/// The ratios the plot shows: for each scale and each non-baseline configuration, the
/// configuration's medians divided by the baseline's.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotData {
    /// Numbers of Services, in run order.
    pub scales: Vec<usize>,
    /// Configurations other than the baseline, in table order.
    pub datapaths: Vec<String>,
    /// `ratios[scale index][datapath index]`.
    pub ratios: Vec<Vec<Option<Medians>>>,
}

impl PlotData {
    /// Collects the ratios from the table's rows.
    pub fn from_rows(rows: &[Row]) -> Self {
        let mut scales: Vec<usize> = Vec::new();
        let mut datapaths: Vec<String> = Vec::new();
        for row in rows {
            if !scales.contains(&row.services) {
                scales.push(row.services);
            }
            if row.datapath != BASELINE && !datapaths.contains(&row.datapath) {
                datapaths.push(row.datapath.clone());
            }
        }
        let ratios = scales
            .iter()
            .map(|&scale| {
                let baseline = baseline_of(rows, scale).map(Row::medians);
                datapaths
                    .iter()
                    .map(|dp| {
                        let row = rows
                            .iter()
                            .find(|r| r.services == scale && &r.datapath == dp)?;
                        Some(ratios(&row.medians(), baseline.as_ref()?))
                    })
                    .collect()
            })
            .collect();
        Self {
            scales,
            datapaths,
            ratios,
        }
    }
}

/// Draws the plot and writes it as a PNG to `path`.
pub fn write_png(data: &PlotData, title: &str, path: &Path) -> anyhow::Result<()> {
    register_fonts()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(data, title, &mut pixels).map_err(|e| anyhow!("drawing the plot failed: {e}"))?;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .with_context(|| format!("cannot write {}", path.display()))?;
    writer
        .write_image_data(&pixels)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writer
        .finish()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Registers DejaVu Sans (regular and bold) as plotters' `sans-serif`, once per process.
fn register_fonts() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for (file, style) in [
                ("DejaVuSans.ttf", FontStyle::Normal),
                ("DejaVuSans-Bold.ttf", FontStyle::Bold),
            ] {
                let path = Path::new(FONT_DIR).join(file);
                let bytes = std::fs::read(&path).map_err(|e| {
                    format!(
                        "cannot read the plot font {} ({e}): run `cargo xtask setup` \
                         (or `apt-get install -y fonts-dejavu-core`)",
                        path.display()
                    )
                })?;
                // plotters keeps fonts for the life of the process; two files, read once.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font(FONT, style, bytes)
                    .map_err(|_| format!("{} is not a usable font", path.display()))?;
            }
            Ok(())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn draw(data: &PlotData, title: &str, pixels: &mut [u8]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(90);
    header.draw(&Text::new(
        title.to_owned(),
        (WIDTH as i32 / 2, 14),
        (FONT, 26, FontStyle::Bold)
            .into_font()
            .into_text_style(&header)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    draw_legend(&header, &data.datapaths)?;

    let groups = data.scales.len().max(1);
    let bars = data.datapaths.len().max(1);
    for (area, panel) in body.split_evenly((2, 2)).iter().zip(PANELS.iter()) {
        let values: Vec<Vec<Option<f64>>> = data
            .ratios
            .iter()
            .map(|per_dp| {
                per_dp
                    .iter()
                    .map(|m| m.as_ref().and_then(panel.value))
                    .collect()
            })
            .collect();
        let top = values
            .iter()
            .flatten()
            .flatten()
            .copied()
            .fold(1.0f64, f64::max)
            * 1.18;
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, (FONT, 19))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5f64..(groups as f64 - 0.5), 0f64..top)?;
        let scales = data.scales.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
            .x_labels(groups)
            .x_label_formatter(&move |x| {
                let i = x.round();
                if (x - i).abs() > 1e-6 || i < 0.0 {
                    return String::new();
                }
                scales
                    .get(i as usize)
                    .map(|s| format!("{s} Service{}", if *s == 1 { "" } else { "s" }))
                    .unwrap_or_default()
            })
            .y_desc(format!("× {BASELINE}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .draw()?;
        // The baseline line first, so that bars cover it and their labels stay readable.
        chart.draw_series(DashedLineSeries::new(
            [(-0.5, 1.0), (groups as f64 - 0.5, 1.0)],
            6,
            4,
            BLACK.stroke_width(2),
        ))?;
        let slot = 0.84 / bars as f64;
        for (g, per_dp) in values.iter().enumerate() {
            for (b, value) in per_dp.iter().enumerate() {
                let Some(v) = *value else { continue };
                let x0 = g as f64 - 0.42 + b as f64 * slot;
                let colour = COLOURS[b % COLOURS.len()];
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0 + 0.06 * slot, 0.0), (x0 + 0.94 * slot, v)],
                    colour.filled(),
                )))?;
                // Inside the bar's top when the bar is tall enough, above it otherwise.
                let inside = v > top * 0.08;
                let style = (FONT, 14, FontStyle::Bold)
                    .into_font()
                    .into_text_style(area)
                    .color(if inside { &WHITE } else { &BLACK })
                    .pos(Pos::new(
                        HPos::Center,
                        if inside { VPos::Top } else { VPos::Bottom },
                    ));
                let nudge = if inside { 5 } else { -3 };
                chart.draw_series(std::iter::once(
                    EmptyElement::at((x0 + slot / 2.0, v))
                        + Text::new(format!("{v:.2}"), (0, nudge), style),
                ))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    datapaths: &[String],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = (FONT, 17).into_font().into_text_style(area);
    let entry = 190;
    let count = datapaths.len() as i32 + 1;
    let mut x = WIDTH as i32 / 2 - entry * count / 2;
    let y = 62;
    for (i, dp) in datapaths.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        area.draw(&Rectangle::new(
            [(x, y - 8), (x + 22, y + 8)],
            colour.filled(),
        ))?;
        area.draw(&Text::new(
            dp.clone(),
            (x + 30, y),
            style.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        x += entry;
    }
    area.draw(&PathElement::new(
        vec![(x, y), (x + 8, y)],
        BLACK.stroke_width(2),
    ))?;
    area.draw(&PathElement::new(
        vec![(x + 14, y), (x + 22, y)],
        BLACK.stroke_width(2),
    ))?;
    area.draw(&Text::new(
        format!("{BASELINE} = 1.0"),
        (x + 30, y),
        style.pos(Pos::new(HPos::Left, VPos::Center)),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Samples;

    fn row(services: usize, datapath: &str, rate: f64) -> Row {
        Row {
            services,
            datapath: datapath.to_owned(),
            samples: Samples {
                conn_rate: vec![rate],
                ..Samples::default()
            },
        }
    }

    #[test]
    fn plot_data_holds_ratios_per_scale_and_configuration() {
        let rows = [
            row(1, "direct", 100.0),
            row(1, "iptables", 80.0),
            row(1, "nftables", 90.0),
            row(1000, "direct", 200.0),
            row(1000, "iptables", 50.0),
        ];
        let data = PlotData::from_rows(&rows);
        assert_eq!(data.scales, [1, 1000]);
        assert_eq!(data.datapaths, ["iptables", "nftables"]);
        let rate = |s: usize, d: usize| data.ratios[s][d].and_then(|m| m.conn_rate);
        assert_eq!(rate(0, 0), Some(0.8));
        assert_eq!(rate(0, 1), Some(0.9));
        assert_eq!(rate(1, 0), Some(0.25));
        assert_eq!(rate(1, 1), None, "not measured at 1000");
    }
}
