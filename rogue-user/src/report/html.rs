//! The report pages: plain HTML with inline CSS and no script, opening from
//! disk without a network, and printing to a clean PDF (the print rules
//! drop what only a screen needs). The console (serve) shows the same
//! sections with the figures inline. Every value is written through
//! [`escape`].

use std::fmt::Write as _;

use super::{HostPage, IndexEntry};
use crate::detect::HostReport;
use crate::{
    config::DnsRecord,
    output::finding_summary,
    store::Peer,
    time::{MILLIS_PER_DAY, rfc3339_millis},
};

/// The pages' style, the report's and the console's.
pub const STYLE: &str = "body{font-family:DejaVu Sans,Verdana,sans-serif;margin:2em;color:#222;max-width:1250px}\
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}\
.muted{color:#666}table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .6em;\
text-align:left;font-size:.9em}td.n{text-align:right;font-variant-numeric:tabular-nums}\
figure{margin:1em 0}img,figure svg{max-width:100%;height:auto;border:1px solid #ddd}\
.verdict{font-size:1.2em;font-weight:bold}.advice{border-left:4px solid #b00;padding:.4em 1em;background:#fdf3f3}\
.advice.ok{border-color:#070;background:#f3fbf3}\
.state-open{color:#b00}.state-confirmed_rogue{color:#b00;font-weight:bold}.state-whitelisted{color:#070}";

/// The pages' print rules, last in any style sheet so they override it:
/// a clean PDF, without what only a screen needs.
pub const PRINT_STYLE: &str = "@media print{body{margin:0;max-width:none;font-size:10pt}nav,form,.screen{display:none}\
section{break-inside:avoid-page}figure{break-inside:avoid}a{color:inherit;text-decoration:none}\
h2{break-after:avoid}table{break-inside:auto}tr{break-inside:avoid}}";

/// How a page shows its figures: as the files beside it (a report's
/// directory), or inline (the console).
pub enum Figures {
    Files,
    Inline { inbound: String, outbound: String, activity: String },
}

/// Text safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn day(ms: i64) -> String {
    rfc3339_millis(ms * 1_000_000)[..10].to_string()
}

fn time(ms: i64) -> String {
    rfc3339_millis(ms * 1_000_000)[..19].replace('T', " ")
}

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}{PRINT_STYLE}</style></head><body>\n",
        escape(title)
    );
}

/// The page of one host, as a report's index.html.
pub fn host_page(page: &HostPage, generated: &str) -> String {
    let mut out = String::new();
    head(&mut out, &format!("rogue report: {}", host_title(page)));
    host_header(&mut out, page, generated);
    host_sections(&mut out, page, &Figures::Files);
    out.push_str("</body></html>\n");
    out
}

/// "192.0.2.25 (mail.example.org)", or the address alone.
pub fn host_title(page: &HostPage) -> String {
    match &page.ptr {
        Some(ptr) => format!("{} ({ptr})", page.host),
        None => page.host.to_string(),
    }
}

/// The host's heading and the period shown.
pub fn host_header(out: &mut String, page: &HostPage, generated: &str) {
    let _ = writeln!(
        out,
        "<header><h1>{}</h1><p class=\"muted\">{} to {} (UTC) &middot; {} s bins &middot; generated {} by rogue {}</p></header>",
        escape(&host_title(page)),
        time(page.from * 1000),
        time(page.to * 1000),
        page.inbound.bin_seconds,
        escape(generated),
        env!("CARGO_PKG_VERSION"),
    );
}

/// What a host's page says below its heading: the advice, the verdict
/// and findings, the figures, the comparison and the peers.
pub fn host_sections(out: &mut String, page: &HostPage, figures: &Figures) {
    host_summary(out, page);
    host_details(out, page, figures);
}

/// The advice, the verdict and the findings.
pub fn host_summary(out: &mut String, page: &HostPage) {
    advice(out, page);
    verdict(out, page);
}

/// The figures, the activity, the comparison and the peers.
pub fn host_details(out: &mut String, page: &HostPage, figures: &Figures) {
    let host = escape(&page.host.to_string());
    let _ = writeln!(out, "<section id=\"ports\"><h2>Port usage</h2>");
    for (file, what, inline) in [
        ("existence-inbound", "Destination ports inbound", figures_inline(figures, 0)),
        ("existence-outbound", "Source ports outbound", figures_inline(figures, 1)),
    ] {
        let caption = format!("{what}: a mark for each port used in a bin, coloured by byte volume.");
        figure(out, file, &format!("{what} of {host}"), &caption, inline);
    }
    out.push_str("</section>\n");
    activity(out, page, figures_inline(figures, 2));
    comparison(out, page);
    let clients: Vec<&Peer> = page.clients.iter().collect();
    let servers: Vec<&Peer> = page.servers.iter().collect();
    peers(out, page, "clients", &format!("{} clients connecting inbound", clients.len()), &clients);
    peers(out, page, "servers", &format!("{} servers connecting outbound", servers.len()), &servers);
}

/// The inline SVG of figure `index` (inbound, outbound, activity), if inline.
fn figures_inline(figures: &Figures, index: usize) -> Option<&str> {
    match figures {
        Figures::Files => None,
        Figures::Inline { inbound, outbound, activity } => Some([inbound, outbound, activity][index].as_str()),
    }
}

/// A figure: the SVG inline, or the PNG file with links to its SVG and data.
fn figure(out: &mut String, file: &str, alt: &str, caption: &str, inline: Option<&str>) {
    match inline {
        Some(svg) => {
            let _ = write!(out, "<figure>{svg}<figcaption>{caption}</figcaption></figure>");
        }
        None => {
            let _ = write!(
                out,
                "<figure><img src=\"{file}.png\" alt=\"{alt}\"><figcaption>{caption} <a href=\"{file}.svg\">SVG</a> \
                 &middot; <a href=\"{file}.json\">data</a></figcaption></figure>"
            );
        }
    }
}

/// The verdict in plain words and the next step, for the host's owner.
fn advice(out: &mut String, page: &HostPage) {
    let Some(report) = &page.report else { return };
    let advice = super::advice::advice(report, &page.service);
    let class = if report.whitelisted.is_some() { "advice ok" } else { "advice" };
    let _ = writeln!(
        out,
        "<section id=\"advice\" class=\"{class}\"><p><strong>{}</strong></p><p>Next step: {}</p></section>",
        escape(&advice.finding),
        escape(&advice.next)
    );
}

/// This host beside a whitelisted server of the same service.
fn comparison(out: &mut String, page: &HostPage) {
    let (Some(this), Some(other)) = (&page.report, &page.comparison) else { return };
    let _ = write!(
        out,
        "<section id=\"comparison\"><h2>Beside a whitelisted {} server</h2><table><tr><th></th><th>this host</th>\
         <th>{}{}</th></tr>",
        escape(&super::advice::plain_name(&page.service)),
        escape(&other.host().to_string()),
        escape(&other.whitelisted.as_ref().and_then(|e| e.name.clone()).map(|n| format!(" ({n})")).unwrap_or_default())
    );
    let share = |r: &HostReport| r.characteristics.share.map_or("unknown".into(), |s| format!("{:.1}%", s * 100.0));
    let yes_no = |v: Option<bool>| v.map_or("unknown", |b| if b { "yes" } else { "no" }).to_string();
    let lines: Vec<(&str, String, String)> = vec![
        ("roles", this.roles().join(", "), other.roles().join(", ")),
        ("qualifying flows", this.activity.flows.to_string(), other.activity.flows.to_string()),
        ("external clients", this.activity.external_clients.to_string(), other.activity.external_clients.to_string()),
        ("external servers", this.activity.external_servers.to_string(), other.activity.external_servers.to_string()),
        (
            "server days",
            format!("{} of {}", this.characteristics.server_days, this.characteristics.days_with_data),
            format!("{} of {}", other.characteristics.server_days, other.characteristics.days_with_data),
        ),
        ("service share", share(this), share(other)),
        (
            "PTR name",
            this.characteristics.ptr.clone().unwrap_or("none or unknown".into()),
            other.characteristics.ptr.clone().unwrap_or("none or unknown".into()),
        ),
        ("naming convention", yes_no(this.characteristics.name_match), yes_no(other.characteristics.name_match)),
        ("DNS record target", yes_no(this.characteristics.record_target), yes_no(other.characteristics.record_target)),
        ("whitelisted", yes_no(Some(this.whitelisted.is_some())), yes_no(Some(other.whitelisted.is_some()))),
    ];
    for (name, a, b) in lines {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td><td>{}</td></tr>", escape(name), escape(&a), escape(&b));
    }
    out.push_str("</table></section>\n");
}

fn verdict(out: &mut String, page: &HostPage) {
    out.push_str("<section id=\"verdict\">");
    let Some(report) = &page.report else {
        let _ = writeln!(
            out,
            "<h2>Verdict</h2><p>No {} activity in the store for this host.</p></section>",
            escape(&page.service.title())
        );
        return;
    };
    let c = &report.characteristics;
    let _ = write!(
        out,
        "<h2>Verdict</h2><p class=\"verdict\">{}</p><p>{}</p><table>",
        escape(report.verdict()),
        escape(&report.evidence)
    );
    let yes_no = |v: Option<bool>| v.map_or("unknown", |b| if b { "yes" } else { "no" });
    let share = format!("{} share", page.service.title());
    let (record, record_value) = match page.service.dns_record {
        DnsRecord::None => ("DNS record".to_string(), "none checked for the service".to_string()),
        record => (format!("{} target", record.as_str()), yes_no(c.record_target).to_string()),
    };
    let rows = [
        ("roles", report.roles().join(", ")),
        ("server days", format!("{} of {} days with data", c.server_days, c.days_with_data)),
        ("service", page.service.name.clone()),
        (&share, c.share.map_or("unknown".into(), |s| format!("{:.1}%", s * 100.0))),
        ("PTR name", c.ptr.clone().unwrap_or_else(|| "none or unknown".into())),
        ("forward-confirmed", yes_no(c.fcrdns).into()),
        ("naming convention", yes_no(c.name_match).into()),
        (&record, record_value),
        (
            "whitelist",
            report.whitelisted.as_ref().map_or("not whitelisted".into(), |e| {
                format!(
                    "{} ({}), verified by {} on {}",
                    e.address,
                    e.name.as_deref().unwrap_or("-"),
                    e.verified_by.as_deref().unwrap_or("-"),
                    e.verified_on.map(|d| d.to_string()).unwrap_or("-".into())
                )
            }),
        ),
    ];
    for (name, value) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(name), escape(&value));
    }
    out.push_str("</table>");
    let _ = write!(out, "<h3>Findings ({})</h3>", page.findings.len());
    if !page.findings.is_empty() {
        out.push_str("<table><tr><th>id</th><th>type</th><th>time</th><th>state</th><th>details</th></tr>");
        for f in &page.findings {
            let _ = write!(
                out,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"state-{}\">{}</td><td>{}</td></tr>",
                f.id,
                escape(&f.kind),
                time(f.time_ms),
                escape(&f.state),
                escape(&f.state),
                escape(&finding_summary(f))
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>\n");
}

fn activity(out: &mut String, page: &HostPage, inline: Option<&str>) {
    let name = escape(&page.service.title());
    out.push_str("<section id=\"activity\"><h2>Activity history</h2>");
    if let Some(began) = page.service_began {
        let _ = write!(out, "<p>{name} activity began on {}.</p>", day(began * MILLIS_PER_DAY));
    }
    figure(
        out,
        "activity",
        "flows and bytes per day",
        &format!("Flows and bytes per day, {name} and all traffic."),
        inline,
    );
    let _ = write!(
        out,
        "\n<table><tr><th>day</th><th>{name} flows</th><th>{name} bytes</th><th>all flows</th><th>all bytes</th></tr>"
    );
    for d in &page.days {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            day(d.day * MILLIS_PER_DAY),
            d.service_flows,
            d.service_bytes,
            d.all_flows,
            d.all_bytes
        );
    }
    out.push_str("</table></section>\n");
}

fn peers(out: &mut String, page: &HostPage, id: &str, heading: &str, peers: &[&Peer]) {
    let _ = write!(out, "<section id=\"{id}\"><h2>{}</h2>", escape(heading));
    if !peers.is_empty() {
        out.push_str(
            "<table><tr><th>address</th><th>PTR name</th><th>flows</th><th>packets</th><th>bytes</th>\
             <th>first seen</th><th>last seen</th></tr>",
        );
        for p in peers {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.peer.to_string()),
                escape(page.peer_names.get(&p.peer).map(String::as_str).unwrap_or("")),
                p.flows,
                p.packets,
                p.bytes,
                time(p.first_ms),
                time(p.last_ms)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>\n");
}

/// The page listing every host with findings.
pub fn index_page(entries: &[IndexEntry], generated: &str) -> String {
    let mut out = String::new();
    head(&mut out, "rogue: hosts with findings");
    let _ = write!(
        out,
        "<header><h1>Hosts with findings</h1><p class=\"muted\">{} hosts &middot; generated {} by rogue {}</p></header>\n\
         <table><tr><th>host</th><th>service</th><th>PTR name</th><th>verdict</th><th>findings</th><th>last activity</th></tr>",
        entries.len(),
        escape(generated),
        env!("CARGO_PKG_VERSION")
    );
    for e in entries {
        let _ = write!(
            out,
            "<tr><td><a href=\"{}/index.html\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&e.dir),
            escape(&e.host.to_string()),
            escape(&e.service),
            escape(e.ptr.as_deref().unwrap_or("")),
            escape(&e.verdict),
            escape(&e.findings),
            time(e.last_ms)
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_quotes_and_control_characters_are_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        assert_eq!(escape("a\u{7}b\u{0}"), "a&#7;b&#0;");
    }
}
