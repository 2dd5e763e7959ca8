//! The report's figures, drawn with plotters onto any backend, so the PNG
//! and the SVG of a figure come from the same code. Text uses the DejaVu
//! Sans font built into rogue (assets/fonts), so PNGs render the same on a
//! machine without any font installed.

use std::sync::Once;

use plotters::{
    coord::Shift,
    prelude::*,
    style::{
        FontStyle,
        text_anchor::{HPos, Pos, VPos},
    },
};

use super::data::{DayActivity, ExistencePlot, port_scale};
use crate::time::{NANOS_PER_SEC, rfc3339_millis};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

pub const EXISTENCE_SIZE: (u32, u32) = (1200, 560);
pub const ACTIVITY_SIZE: (u32, u32) = (1200, 640);

/// Colours of the three volume classes, low to high.
const CLASS_COLOURS: [RGBColor; 3] = [RGBColor(70, 130, 180), RGBColor(245, 160, 20), RGBColor(200, 30, 30)];
const SERVICE_COLOUR: RGBColor = RGBColor(200, 30, 30);
const ALL_COLOUR: RGBColor = RGBColor(70, 130, 180);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let parsed = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok();
        assert!(parsed, "the built-in font parses");
    });
}

/// A figure that can be drawn on any plotters backend.
pub trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// Draws `figure` at the given size as PNG bytes and SVG text, in memory:
/// whoever writes them decides how (see report::write_new).
pub fn png_and_svg(figure: &impl Figure, size: (u32, u32)) -> Result<(Vec<u8>, String)> {
    register_font();
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    figure.draw(BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area())?;
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &pixels,
        size.0,
        size.1,
        image::ColorType::Rgb8,
    )?;
    let mut svg = String::new();
    figure.draw(SVGBackend::with_string(&mut svg, size).into_drawing_area())?;
    Ok((png, svg))
}

pub struct Existence<'a> {
    pub plot: &'a ExistencePlot,
    pub title: String,
    /// The service's ports, labelled even above 1023.
    pub service_ports: &'a [u16],
}

impl Figure for Existence<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        existence(root, self.plot, &self.title, self.service_ports)
    }
}

pub struct Activity<'a> {
    pub days: &'a [DayActivity],
    pub title: String,
    /// The service's name, for its series.
    pub service: String,
}

impl Figure for Activity<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        activity(root, self.days, &self.title, &self.service)
    }
}

fn date(seconds: i64, with_time: bool) -> String {
    let text = rfc3339_millis(seconds * NANOS_PER_SEC);
    if with_time { text[5..16].replace('T', " ") } else { text[..10].to_string() }
}

/// The method's existence plot: a mark where the host used a port in a bin.
fn existence<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    plot: &ExistencePlot,
    title: &str,
    service_ports: &[u16],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let span = (plot.to - plot.from).max(plot.bin_seconds);
    let with_time = span <= 3 * 86_400;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 20))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(100)
        .build_cartesian_2d(plot.from..plot.from + span, 0f64..2048f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(8)
        .x_label_formatter(&|x| date(*x, with_time))
        .x_desc(format!("time ({} s bins)", plot.bin_seconds))
        .y_desc("port")
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()?;

    // A mark at least 3 px high, however compressed the scale.
    let plot_height = chart.plotting_area().dim_in_pixel().1.max(1) as f64;
    let mark = 3.0 * 2048.0 / plot_height;
    for (class, colour) in CLASS_COLOURS.iter().enumerate() {
        let cells = plot.cells.iter().filter(|c| c.class as usize == class + 1);
        chart
            .draw_series(cells.map(|c| {
                let y = port_scale(c.port);
                Rectangle::new([(c.bin, y), (c.bin + plot.bin_seconds, y + mark)], colour.filled())
            }))?
            .label(plot.legend()[class].clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(plot.from, 1024.0), (plot.from + span, 1024.0)],
        BLACK.mix(0.3),
    )))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()?;

    // Labels only for the reserved ports in use, in two columns so close
    // ports (110 and 143) both get one; a label that fits in neither column
    // is left out. The compressed part is named once.
    let label = TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let mut last_y = [i32::MAX; 2];
    for port in plot.labelled_ports(service_ports) {
        let (x, y) = chart.backend_coord(&(plot.from, port_scale(port) + mark / 2.0));
        if let Some(column) = (0..2).find(|&c| last_y[c] - y >= 12) {
            root.draw(&Text::new(port.to_string(), (x - 6 - 32 * column as i32, y), label.clone()))?;
            last_y[column] = y;
        }
    }
    let (x, y) = chart.backend_coord(&(plot.from, 1536.0));
    root.draw(&Text::new("1024-65535", (x - 6, y), label))?;
    root.present()?;
    Ok(())
}

/// A panel of the activity plot: its title, the host's service series and its
/// all-traffic series.
type Panel = (&'static str, fn(&DayActivity) -> u64, fn(&DayActivity) -> u64);

/// Flows and bytes per day: the host's service traffic and all its traffic.
fn activity<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    days: &[DayActivity],
    title: &str,
    service: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, (FAMILY, 20))?;
    let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 / 2);
    let first = days.first().map_or(0, |d| d.day);
    let last = days.last().map_or(0, |d| d.day) + 1;
    let panels: [Panel; 2] = [
        ("flows per day", |d| d.service_flows, |d| d.all_flows),
        ("bytes per day", |d| d.service_bytes, |d| d.all_bytes),
    ];
    for (area, (name, smtp, all)) in [upper, lower].into_iter().zip(panels) {
        let top = days.iter().map(|d| smtp(d).max(all(d))).max().unwrap_or(1).max(1) as f64 * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .margin_right(40)
            .x_label_area_size(30)
            .y_label_area_size(80)
            .build_cartesian_2d(first..last, 0f64..top)?;
        chart
            .configure_mesh()
            .x_labels(10)
            .x_label_formatter(&|d| date(d * 86_400, false))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc(name)
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .draw()?;
        for (series, colour, value) in [("all traffic", ALL_COLOUR, all), (service, SERVICE_COLOUR, smtp)] {
            let points: Vec<(i64, f64)> = days.iter().map(|d| (d.day, value(d) as f64)).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                .label(series)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2)));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
