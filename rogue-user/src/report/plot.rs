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

use plotters_backend::{self as backend, BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

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

pub type PlotError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, PlotError>;

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
    figure.draw(GlyphFix(BitMapBackend::with_buffer(&mut pixels, size)).into_drawing_area())?;
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &pixels,
        size.0,
        size.1,
        image::ColorType::Rgb8,
    )?;
    Ok((png, svg(figure, size)?))
}

/// Draws `figure` as SVG text alone (a page that shows it inline).
pub fn svg(figure: &impl Figure, size: (u32, u32)) -> Result<String> {
    register_font();
    let mut svg = String::new();
    figure.draw(SVGBackend::with_string(&mut svg, size).into_drawing_area())?;
    Ok(compact_rects(&svg))
}

/// `svg` with each run of filled rectangles of one colour (plotters writes
/// one element of some 90 bytes per existence mark) as one path of
/// `M x y h w v h h -w z` steps, the same picture in a fifth of the text.
pub fn compact_rects(svg: &str) -> String {
    let mut out = String::with_capacity(svg.len() / 3);
    let mut run: Option<(String, String)> = None;
    for line in svg.lines() {
        match filled_rect(line) {
            Some((fill, [x, y, w, h])) => {
                let step = format!("M{x} {y}h{w}v{h}h-{w}z");
                match &mut run {
                    Some((colour, path)) if *colour == fill => path.push_str(&step),
                    _ => {
                        close_run(&mut out, run.take());
                        run = Some((fill.to_string(), step));
                    }
                }
            }
            None => {
                close_run(&mut out, run.take());
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    close_run(&mut out, run);
    out
}

fn close_run(out: &mut String, run: Option<(String, String)>) {
    if let Some((fill, path)) = run {
        out.push_str(&format!("<path fill=\"{fill}\" d=\"{path}\"/>\n"));
    }
}

/// The fill and x, y, width, height of a line plotters writes for an
/// opaque filled rectangle without a stroke:
/// `<rect x="115" y="499" width="1" height="3" opacity="1" fill="#4682B4" stroke="none"/>`.
fn filled_rect(line: &str) -> Option<(&str, [&str; 4])> {
    let attributes = line.strip_prefix("<rect x=\"")?.strip_suffix("\" stroke=\"none\"/>")?;
    let values: Vec<&str> = attributes.split('"').collect();
    let [x, " y=", y, " width=", w, " height=", h, " opacity=", "1", " fill=", fill] = values[..] else {
        return None;
    };
    let number = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'.');
    [x, y, w, h].into_iter().all(number).then_some((fill, [x, y, w, h]))
}

/// A bitmap backend whose text rogue draws: plotters 0.3.7 places each
/// glyph at its advance but drops its left side bearing, so narrow glyphs
/// shift and PNG labels read "SM TP" and "2008-02-1 3". SVGs leave text to
/// the browser and need no fix.
struct GlyphFix<B>(B);

impl<B: DrawingBackend> DrawingBackend for GlyphFix<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let (pixels, width, height) = rasterise(text, style.size() as f32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let (w, h) = self.get_size();
        for (x, y, coverage) in pixels {
            let (x, y) = style.transform().transform(x + dx, y + dy);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && x < w as i32 && y >= 0 && y < h as i32 {
                let alpha = color.alpha * f64::from(coverage.min(1.0));
                self.0.draw_pixel((x, y), BackendColor { alpha, rgb: color.rgb })?;
            }
        }
        Ok(())
    }
}

/// The pixels of `text` at `size` px in the built-in font, each with its
/// coverage, from the top left of its box; and the box's width and height.
fn rasterise(text: &str, size: f32) -> (Vec<(i32, i32, f32)>, i32, i32) {
    use ab_glyph::{Font as _, FontRef, ScaleFont as _, point};
    let font = FontRef::try_from_slice(FONT).expect("the built-in font parses");
    let scaled = font.as_scaled(size);
    let (mut caret, mut previous, mut pixels) = (0f32, None, Vec::new());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(previous) = previous {
            caret += scaled.kern(previous, id);
        }
        let glyph = id.with_scale_and_position(scaled.scale(), point(caret, scaled.ascent()));
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                pixels.push((bounds.min.x as i32 + x as i32, bounds.min.y as i32 + y as i32, coverage))
            });
        }
        caret += scaled.h_advance(id);
        previous = Some(id);
    }
    (pixels, caret.round() as i32, (scaled.ascent() - scaled.descent()).round() as i32)
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
    /// The day the host's service activity began, marked.
    pub began: Option<i64>,
}

impl Figure for Activity<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        activity(root, self)
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
    // One mark per pixel it covers, of the highest class there: months of
    // an MX's ephemeral ports put hundreds of cells on one pixel, and
    // drawing each would only bloat the figure (the JSON keeps them all).
    let mut on_pixel: std::collections::HashMap<(i32, i32), &super::data::Cell> = std::collections::HashMap::new();
    for cell in &plot.cells {
        let pixel = chart.backend_coord(&(cell.bin, port_scale(cell.port)));
        let kept = on_pixel.entry(pixel).or_insert(cell);
        if cell.class > kept.class {
            *kept = cell;
        }
    }
    let mut marks: Vec<&super::data::Cell> = on_pixel.into_values().collect();
    marks.sort_unstable();
    for (class, colour) in CLASS_COLOURS.iter().enumerate() {
        let cells = marks.iter().filter(|c| c.class as usize == class + 1);
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

    // Labels for the reserved and service ports in use, and the compressed
    // part named once; labels that would overlap (993 and 995) are spread
    // apart, each with a leader to its port.
    let label = TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let mut labels: Vec<(String, i32)> = plot
        .labelled_ports(service_ports)
        .into_iter()
        .map(|port| (port.to_string(), chart.backend_coord(&(plot.from, port_scale(port) + mark / 2.0)).1))
        .collect();
    labels.push(("1024-65535".into(), chart.backend_coord(&(plot.from, 1536.0)).1));
    let (top, bottom) = (chart.backend_coord(&(plot.from, 2048.0)).1, chart.backend_coord(&(plot.from, 0.0)).1);
    let x = chart.backend_coord(&(plot.from, 0.0)).0;
    let wanted: Vec<i32> = labels.iter().map(|(_, y)| *y).collect();
    for ((text, at), wanted) in labels.iter().zip(spread(&wanted, LABEL_SPACING, top, bottom)) {
        if wanted != *at {
            root.draw(&PathElement::new(vec![(x - 12, wanted), (x - 2, *at)], BLACK.mix(0.5)))?;
        }
        root.draw(&Text::new(text.clone(), (x - 14, wanted), label.clone()))?;
    }
    root.present()?;
    Ok(())
}

/// Pixels between two port labels' centres, so 12 px text never overlaps.
const LABEL_SPACING: i32 = 13;

/// Positions for labels wanted at pixel rows `wanted`, in the same order:
/// each as near its row as it can be while at least `spacing` from the
/// others and within [top, bottom].
pub fn spread(wanted: &[i32], spacing: i32, top: i32, bottom: i32) -> Vec<i32> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&i| wanted[i]);
    let mut placed: Vec<i32> = order.iter().map(|&i| wanted[i]).collect();
    // Down from the top, then back up from the bottom should the last
    // have been pushed past it.
    for i in 0..placed.len() {
        placed[i] = placed[i].max(top + spacing / 2);
        if i > 0 {
            placed[i] = placed[i].max(placed[i - 1] + spacing);
        }
    }
    for i in (0..placed.len()).rev() {
        placed[i] = placed[i].min(bottom - spacing / 2);
        if i + 1 < placed.len() {
            placed[i] = placed[i].min(placed[i + 1] - spacing);
        }
    }
    let mut positions = vec![0; wanted.len()];
    for (rank, &i) in order.iter().enumerate() {
        positions[i] = placed[rank];
    }
    positions
}

/// Bytes in the units a reader takes in at a glance: 950 B, 12.5 kB,
/// 3.2 MB (powers of 1000, as network volumes are counted).
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{value:.0} B"),
        _ if value.abs() >= 100.0 => format!("{value:.0} {}", UNITS[unit]),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// A panel of the activity plot: its title, the host's service series and its
/// all-traffic series.
type Panel = (&'static str, fn(&DayActivity) -> u64, fn(&DayActivity) -> u64);

/// Flows and bytes per day: the host's service traffic and all its
/// traffic, with the day its service activity began marked.
fn activity<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, figure: &Activity<'_>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let days = figure.days;
    root.fill(&WHITE)?;
    let root = root.titled(&figure.title, (FAMILY, 20))?;
    let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 / 2);
    let first = days.first().map_or(0, |d| d.day);
    let last = days.last().map_or(0, |d| d.day) + 1;
    let panels: [Panel; 2] = [
        ("flows per day", |d| d.service_flows, |d| d.all_flows),
        ("bytes per day", |d| d.service_bytes, |d| d.all_bytes),
    ];
    for (index, (area, (name, service, all))) in [upper, lower].into_iter().zip(panels).enumerate() {
        let top = days.iter().map(|d| service(d).max(all(d))).max().unwrap_or(1).max(1) as f64 * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .margin_right(40)
            .x_label_area_size(30)
            .y_label_area_size(80)
            .build_cartesian_2d(first..last, 0f64..top)?;
        let bytes = index == 1;
        chart
            .configure_mesh()
            .x_labels(10)
            .x_label_formatter(&|d| date(d * 86_400, false))
            .y_label_formatter(&|v| if bytes { human_bytes(*v) } else { format!("{v:.0}") })
            .y_desc(name)
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .draw()?;
        if let Some(began) = figure.began.filter(|d| (first..last).contains(d)) {
            let marker = BLACK.mix(0.6).stroke_width(1);
            chart.draw_series(std::iter::once(PathElement::new(vec![(began, 0.0), (began, top)], marker)))?;
            if index == 0 {
                let label = format!("{} began {}", figure.service, date(began * 86_400, false));
                let style = TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(HPos::Left, VPos::Top));
                chart.draw_series(std::iter::once(Text::new(label, (began, top * 0.97), style)))?;
            }
        }
        for (series, colour, value) in
            [("all traffic", ALL_COLOUR, all), (figure.service.as_str(), SERVICE_COLOUR, service)]
        {
            let points: Vec<(i64, f64)> = days.iter().map(|d| (d.day, value(d) as f64)).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), Color::stroke_width(&colour, 2)))?
                .label(series)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], Color::stroke_width(&colour, 2)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_labels_are_spread_and_far_ones_stay() {
        // 993 and 995 a pixel apart, 587 far below: the two are pushed
        // apart around where they were, 587 stays.
        assert_eq!(spread(&[100, 101, 300], 13, 0, 500), [100, 113, 300]);
        assert_eq!(spread(&[300, 101, 100], 13, 0, 500), [300, 113, 100], "in the order given");
        assert_eq!(spread(&[495, 496], 13, 0, 500), [481, 494], "kept within the plot");
        let many = spread(&[50; 10], 13, 0, 500);
        assert!(many.windows(2).all(|w| w[1] - w[0] >= 13), "{many:?}");
    }

    #[test]
    fn runs_of_filled_rectangles_become_one_path_each_and_nothing_else_changes() {
        let svg = "<svg>\n<rect x=\"1\" y=\"2\" width=\"3\" height=\"4\" opacity=\"1\" fill=\"#4682B4\" stroke=\"none\"/>\n\
                   <rect x=\"5\" y=\"6\" width=\"1\" height=\"3\" opacity=\"1\" fill=\"#4682B4\" stroke=\"none\"/>\n\
                   <rect x=\"5\" y=\"9\" width=\"1\" height=\"3\" opacity=\"0.5\" fill=\"#4682B4\" stroke=\"none\"/>\n\
                   <rect x=\"7\" y=\"8\" width=\"1\" height=\"3\" opacity=\"1\" fill=\"#C81E1E\" stroke=\"none\"/>\n</svg>\n";
        assert_eq!(
            compact_rects(svg),
            "<svg>\n<path fill=\"#4682B4\" d=\"M1 2h3v4h-3zM5 6h1v3h-1z\"/>\n\
             <rect x=\"5\" y=\"9\" width=\"1\" height=\"3\" opacity=\"0.5\" fill=\"#4682B4\" stroke=\"none\"/>\n\
             <path fill=\"#C81E1E\" d=\"M7 8h1v3h-1z\"/>\n</svg>\n"
        );
    }

    #[test]
    fn text_keeps_each_glyphs_bearing_so_words_do_not_break() {
        // plotters' own rasteriser dropped the left bearing: "1" and "T"
        // drew left of their advance, opening gaps ("2008-02-1 3", "SM TP").
        for text in ["2008-02-13", "SMTP", "440 - 4,501 bytes"] {
            let (pixels, width, _) = rasterise(text, 12.0);
            let mut columns: Vec<i32> = pixels.iter().filter(|p| p.2 > 0.3).map(|p| p.0).collect();
            columns.sort_unstable();
            columns.dedup();
            let widest_gap = columns.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap_or(0);
            let words_gap = if text.contains(' ') { 5 } else { 2 };
            assert!(widest_gap <= words_gap, "{text:?}: a gap of {widest_gap} px between inked columns");
            assert!((columns[0] >= 0) && (columns[columns.len() - 1] <= width + 1), "{text:?} within its box");
        }
    }

    #[test]
    fn bytes_read_in_units() {
        assert_eq!(
            [0.0, 950.0, 12_500.0, 3_200_000.0, 700_000.0, 1e15].map(human_bytes),
            ["0 B", "950 B", "12.5 kB", "3.2 MB", "700 kB", "1.0 PB"]
        );
    }
}
