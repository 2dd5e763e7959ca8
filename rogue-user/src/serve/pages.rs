//! The console's pages as HTML text: the layout, the findings list, a
//! host's page (the report's sections with the figures inline, then the
//! whitelist's standing and history), the whitelist, the suggestions, the
//! audit trail and the login form. Forms appear only to an analyst who may
//! act, each with the session's CSRF token. Every value is written through
//! [`escape`].

use std::{fmt::Write as _, net::IpAddr};

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use super::PageError;
use crate::{
    detect::HostReport,
    engine::Engine,
    output::finding_summary,
    report::{self, Request, escape, html},
    store::{Action, StoredFinding},
    time::{MILLIS_PER_DAY, rfc3339_millis},
};

/// Refreshes the findings list in place every 30 s while nothing on the
/// page is being chosen or typed; the page works without it.
pub const SCRIPT: &str = r#"'use strict';
const table = document.querySelector('table[data-refresh]');
if (table) {
  setInterval(async () => {
    const busy = document.querySelector('input[type=checkbox]:checked') || document.activeElement?.tagName === 'INPUT';
    if (busy || document.hidden) return;
    const url = new URL(location.href);
    url.searchParams.set('rows', '1');
    const response = await fetch(url, { credentials: 'same-origin' });
    if (response.ok && response.headers.get('content-type')?.startsWith('text/html')) {
      table.tBodies[0].innerHTML = await response.text();
    }
  }, 30000);
}
"#;

/// The report's style, and the console's own.
pub fn css() -> String {
    html::STYLE.to_string()
        + "nav{display:flex;gap:1.2em;align-items:center;border-bottom:1px solid #ccc;padding-bottom:.5em}\
           nav .who{margin-left:auto}nav form{display:inline}.notice{background:#eef6ee;border:1px solid #9c9;\
           padding:.4em .8em}.sev-high{color:#b00;font-weight:bold}.sev-medium{color:#c60}.sev-low{color:#555}\
           .new{background:#fe9;padding:0 .3em;font-size:.8em}form.inline{display:inline}fieldset{border:1px solid \
           #ccc;margin:.6em 0}input[type=text],input[type=password]{min-width:18em}.filters label{margin-right:1em}"
        + html::PRINT_STYLE
}

/// Who is looking, and what they may do.
#[derive(Clone, Debug, Default)]
pub struct Viewer {
    pub user: Option<String>,
    pub csrf: Option<String>,
    pub can_act: bool,
}

impl Viewer {
    /// The hidden fields every form that acts carries.
    fn form_fields(&self, back: &str) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"back\" value=\"{}\">",
            escape(self.csrf.as_deref().unwrap_or("")),
            escape(back)
        )
    }
}

pub fn html(page: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

pub fn error(status: StatusCode, message: &str) -> Response {
    let mut out = String::new();
    head(&mut out, "error", &Viewer::default());
    let _ = write!(
        out,
        "<h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the findings</a></p></body></html>",
        status.as_u16(),
        escape(message)
    );
    (status, html(out)).into_response()
}

/// Percent-encodes `text` for a URL's query or path.
pub fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => out.push(byte as char),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

fn time(ms: i64) -> String {
    rfc3339_millis(ms * 1_000_000)[..19].replace('T', " ")
}

fn head(out: &mut String, title: &str, viewer: &Viewer) {
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} &middot; rogue</title>\
         <link rel=\"stylesheet\" href=\"/console.css\"><script src=\"/console.js\" defer></script></head><body>\n\
         <nav><strong>rogue</strong><a href=\"/\">Findings</a><a href=\"/suggestions\">Suggestions</a>\
         <a href=\"/whitelist\">Whitelist</a><a href=\"/history\">History</a>",
        escape(title)
    );
    if let Some(user) = &viewer.user {
        let _ = write!(
            out,
            "<span class=\"who\">{} <form method=\"post\" action=\"/logout\">{}<button>Log out</button></form></span>",
            escape(user),
            viewer.form_fields("/")
        );
    }
    out.push_str("</nav>\n");
}

fn notice(out: &mut String, notice: Option<&str>) {
    if let Some(text) = notice.filter(|t| !t.is_empty()) {
        let _ = write!(out, "<p class=\"notice\" role=\"status\">{}</p>", escape(text));
    }
}

/// The findings list's filters, from the query string.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct FindingsFilter {
    pub kind: Option<String>,
    pub service: Option<String>,
    /// A state, or `all`; open by default.
    pub state: Option<String>,
    /// Only findings first reported within this long: `1d`, `7d`, `30d`.
    pub new: Option<String>,
    pub notice: Option<String>,
    /// Only the table's rows (the live refresh).
    pub rows: Option<String>,
}

impl FindingsFilter {
    fn state(&self) -> &str {
        self.state.as_deref().filter(|s| !s.is_empty()).unwrap_or("open")
    }

    /// The list's address with these filters (no notice, no rows).
    pub fn url(&self) -> String {
        let pairs = [("kind", &self.kind), ("service", &self.service), ("state", &self.state), ("new", &self.new)];
        let query: Vec<String> = pairs
            .iter()
            .filter_map(|(name, value)| {
                value.as_deref().filter(|v| !v.is_empty()).map(|v| format!("{name}={}", url_encode(v)))
            })
            .collect();
        if query.is_empty() { "/".into() } else { format!("/?{}", query.join("&")) }
    }

    fn keeps(&self, finding: &StoredFinding, now_ms: i64) -> Result<bool, PageError> {
        let chosen =
            |wanted: &Option<String>, value: &str| wanted.as_deref().is_none_or(|w| w.is_empty() || w == value);
        let within = match self.new.as_deref().unwrap_or("") {
            "" => i64::MAX,
            "1d" => MILLIS_PER_DAY,
            "7d" => 7 * MILLIS_PER_DAY,
            "30d" => 30 * MILLIS_PER_DAY,
            other => return Err(PageError::BadRequest(format!("new={other:?}: choose 1d, 7d or 30d"))),
        };
        Ok(chosen(&self.kind, &finding.kind)
            && chosen(&self.service, &finding.service)
            && (self.state() == "all" || self.state() == finding.state)
            && now_ms.saturating_sub(finding.created_ms) <= within)
    }
}

const KINDS: [&str; 3] = ["rogue_server", "fanout_burst", "volume_spike"];
const STATES: [&str; 5] = ["open", "acknowledged", "whitelisted", "confirmed_rogue", "all"];

/// `/`: the findings, most severe and most recent first.
pub fn findings(engine: &Engine, viewer: &Viewer, filter: &FindingsFilter) -> Result<String, PageError> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let severity = &engine.config.output.severity;
    let mut shown = Vec::new();
    for finding in engine.store.findings(None, None)? {
        if filter.keeps(&finding, now_ms)? {
            shown.push(finding);
        }
    }
    shown.sort_by_key(|f| (std::cmp::Reverse(severity.of(&f.kind).score()), std::cmp::Reverse(f.time_ms), f.id));
    let can_act = viewer.can_act;
    let mut rows = String::new();
    for f in &shown {
        let level = severity.of(&f.kind).as_str();
        let new =
            if now_ms.saturating_sub(f.created_ms) <= MILLIS_PER_DAY { " <span class=\"new\">new</span>" } else { "" };
        let choose = match can_act && f.state == "open" {
            true => format!(
                "<td><input type=\"checkbox\" name=\"id\" value=\"{}\" form=\"ack\" aria-label=\"finding {}\"></td>",
                f.id, f.id
            ),
            false if can_act => "<td></td>".into(),
            false => String::new(),
        };
        let _ = write!(
            rows,
            "<tr>{choose}<td class=\"sev-{level}\">{level}</td><td>{}</td><td>{}{new}</td><td>{}</td><td>{}</td>\
             <td><a href=\"/host/{}?service={}\">{}</a></td><td class=\"state-{}\">{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            time(f.time_ms),
            time(f.created_ms),
            escape(&f.kind),
            escape(&f.service),
            url_encode(&f.host.to_string()),
            url_encode(&f.service),
            escape(&f.host.to_string()),
            escape(&f.state),
            escape(&f.state),
            escape(&finding_summary(f)),
            f.id
        );
    }
    if filter.rows.is_some() {
        return Ok(rows);
    }
    let mut out = String::new();
    head(&mut out, "findings", viewer);
    notice(&mut out, filter.notice.as_deref());
    let _ = write!(out, "<h1>Findings</h1><form method=\"get\" action=\"/\" class=\"filters\">");
    select(&mut out, "kind", "kind", &KINDS, filter.kind.as_deref(), true);
    let services: Vec<&str> = engine.config.services.all().iter().map(|s| s.name.as_str()).collect();
    select(&mut out, "service", "service", &services, filter.service.as_deref(), true);
    select(&mut out, "state", "state", &STATES, Some(filter.state()), false);
    select(&mut out, "new", "first reported within", &["1d", "7d", "30d"], filter.new.as_deref(), true);
    let _ = write!(
        out,
        "<button>Show</button></form><p class=\"muted\">{} finding(s), most severe and most recent first; the list refreshes every 30 s.</p>",
        shown.len()
    );
    if can_act {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/act/ack\" id=\"ack\">{}<label>Reason <input type=\"text\" name=\"reason\"></label> \
             <button>Acknowledge the chosen findings</button></form>",
            viewer.form_fields(&filter.url())
        );
    }
    let _ = write!(
        out,
        "<table data-refresh id=\"findings\"><thead><tr>{}<th>severity</th><th>time</th><th>first reported</th><th>type</th>\
         <th>service</th><th>host</th><th>state</th><th>details</th><th>id</th></tr></thead><tbody>{rows}</tbody></table></body></html>",
        if can_act { "<th></th>" } else { "" }
    );
    Ok(out)
}

fn select(out: &mut String, name: &str, label: &str, options: &[&str], chosen: Option<&str>, any: bool) {
    let _ = write!(out, "<label>{} <select name=\"{name}\">", escape(label));
    if any {
        out.push_str("<option value=\"\">any</option>");
    }
    for option in options {
        let selected = if chosen == Some(*option) { " selected" } else { "" };
        let _ = write!(out, "<option{selected}>{}</option>", escape(option));
    }
    out.push_str("</select></label>");
}

/// `/host/ADDR`: the host's report, its whitelist standing and history,
/// and the decisions an analyst may take on it.
pub fn host(
    engine: &Engine,
    viewer: &Viewer,
    host: IpAddr,
    service: Option<&str>,
    shown_notice: Option<&str>,
) -> Result<String, PageError> {
    let services = engine.config.services.all();
    let service = match service.filter(|s| !s.is_empty()) {
        Some(name) => services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| PageError::BadRequest(format!("{name:?} is not a configured service")))?,
        None => report::first_service_of(&*engine.store, services, host)?,
    };
    let request = Request { host, from_ms: None, to_ms: None, bin_seconds: 600 };
    let (config, path) = (&engine.config, &engine.store_path);
    let page = match report::gather(&|| Engine::reader(config, path), &engine.detector(), service, request) {
        Err(e @ report::ReportError::NoData(_)) => return Err(PageError::NotFound(e.to_string())),
        other => other?,
    };
    let figures = report::inline_figures(&page)?;
    let here = format!("/host/{}?service={}", url_encode(&host.to_string()), url_encode(&service.name));
    let mut out = String::new();
    head(&mut out, &html::host_title(&page), viewer);
    notice(&mut out, shown_notice);
    let generated = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string();
    html::host_header(&mut out, &page, &generated);
    if services.len() > 1 {
        out.push_str("<p class=\"screen\">Service: ");
        for s in services {
            let _ = write!(
                out,
                "<a href=\"/host/{}?service={}\">{}</a> ",
                url_encode(&host.to_string()),
                url_encode(&s.name),
                escape(&s.name)
            );
        }
        out.push_str("</p>");
    }
    html::host_summary(&mut out, &page);
    if viewer.can_act {
        decisions(&mut out, viewer, &page, &here);
    }
    html::host_details(&mut out, &page, &figures);
    standing(&mut out, engine, host)?;
    out.push_str("</body></html>\n");
    Ok(out)
}

/// The forms of a host's page: acknowledge its open findings, accept it
/// into the whitelist, reject it as a rogue.
fn decisions(out: &mut String, viewer: &Viewer, page: &report::HostPage, here: &str) {
    let host = escape(&page.host.to_string());
    let service = escape(&page.service.name);
    let fields = viewer.form_fields(here);
    out.push_str("<section id=\"decide\" class=\"screen\"><h2>Decide</h2>");
    let open: Vec<&StoredFinding> = page.findings.iter().filter(|f| f.state == "open").collect();
    if !open.is_empty() {
        let ids: String =
            open.iter().map(|f| format!("<input type=\"hidden\" name=\"id\" value=\"{}\">", f.id)).collect();
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/act/ack\"><fieldset><legend>Acknowledge its {} open finding(s)</legend>{fields}{ids}\
             <label>Reason <input type=\"text\" name=\"reason\"></label> <button>Acknowledge</button></fieldset></form>",
            open.len()
        );
    }
    if page.report.as_ref().is_some_and(|r| r.whitelisted.is_none()) {
        for (action, legend, button) in [
            ("accept", "Accept: it is a legitimate server (it joins the whitelist)", "Accept"),
            ("reject", "Reject: it is a rogue (confirmed; no longer suggested)", "Reject"),
        ] {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/act/{action}\"><fieldset><legend>{legend}</legend>{fields}\
                 <input type=\"hidden\" name=\"host\" value=\"{host}\"><input type=\"hidden\" name=\"service\" value=\"{service}\">\
                 <label>Reason <input type=\"text\" name=\"reason\" required></label> <button>{button}</button></fieldset></form>"
            );
        }
    }
    out.push_str("</section>\n");
}

/// The whitelist entries covering `host` and every decision taken on it.
fn standing(out: &mut String, engine: &Engine, host: IpAddr) -> Result<(), PageError> {
    out.push_str("<section id=\"whitelist\"><h2>Whitelist</h2>");
    let entries: Vec<_> = engine.whitelist.entries().iter().filter(|e| e.address.0.contains(&host)).collect();
    if entries.is_empty() {
        out.push_str("<p>Not on the whitelist.</p>");
    } else {
        entry_table(out, &entries, None);
    }
    let actions: Vec<Action> = engine.store.actions()?.into_iter().filter(|a| concerns(a, host)).collect();
    let _ = write!(out, "<h3>History ({})</h3>", actions.len());
    action_table(out, &actions);
    out.push_str("</section>\n");
    Ok(())
}

/// Whether `action` was taken on `host` (itself, or a prefix covering it).
fn concerns(action: &Action, host: IpAddr) -> bool {
    match action.subject.parse::<crate::detect::whitelist::Prefix>() {
        Ok(prefix) => prefix.0.contains(&host),
        Err(_) => false,
    }
}

fn action_table(out: &mut String, actions: &[Action]) {
    if actions.is_empty() {
        out.push_str("<p>No decision recorded.</p>");
        return;
    }
    out.push_str("<table><tr><th>when</th><th>who</th><th>action</th><th>service</th><th>on</th><th>finding</th><th>why</th><th>via</th></tr>");
    for a in actions {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            time(a.at_ms),
            escape(&a.by),
            escape(&a.action),
            escape(&a.service),
            escape(&a.subject),
            a.finding.map(|id| id.to_string()).unwrap_or_default(),
            escape(&a.reason),
            escape(&a.via)
        );
    }
    out.push_str("</table>");
}

/// The entries, with a remove form each when `remove` gives the viewer and
/// the page to come back to.
fn entry_table(
    out: &mut String,
    entries: &[&crate::detect::whitelist::WhitelistEntry],
    remove: Option<(&Viewer, &str)>,
) {
    let _ = write!(
        out,
        "<table><tr><th>address</th><th>service</th><th>name</th><th>verified by</th><th>on</th><th>reason</th>{}</tr>",
        if remove.is_some() { "<th></th>" } else { "" }
    );
    for e in entries {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            escape(&e.address.to_string()),
            escape(&e.service),
            escape(e.name.as_deref().unwrap_or("")),
            escape(e.verified_by.as_deref().unwrap_or("")),
            e.verified_on.map(|d| d.to_string()).unwrap_or_default(),
            escape(e.reason.as_deref().unwrap_or(""))
        );
        if let Some((viewer, back)) = remove {
            let _ = write!(
                out,
                "<td><form method=\"post\" action=\"/act/whitelist-remove\" class=\"inline\">{}<input type=\"hidden\" name=\"address\" value=\"{}\">\
                 <input type=\"hidden\" name=\"service\" value=\"{}\"><input type=\"text\" name=\"reason\" placeholder=\"why\" aria-label=\"why remove {}\"> \
                 <button>Remove</button></form></td>",
                viewer.form_fields(back),
                escape(&e.address.to_string()),
                escape(&e.service),
                escape(&e.address.to_string())
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// `/whitelist`: every entry, with who verified it, when and why.
pub fn whitelist(engine: &Engine, viewer: &Viewer, shown_notice: Option<&str>) -> Result<String, PageError> {
    let mut out = String::new();
    head(&mut out, "whitelist", viewer);
    notice(&mut out, shown_notice);
    let entries: Vec<_> = engine.whitelist.entries().iter().collect();
    let _ = write!(
        out,
        "<h1>Whitelist</h1><p class=\"muted\">{} entr{} in {}</p>",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        escape(&engine.whitelist.path().display().to_string())
    );
    entry_table(&mut out, &entries, viewer.can_act.then_some((viewer, "/whitelist")));
    if viewer.can_act {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/act/whitelist-add\"><fieldset><legend>Add an entry you verified</legend>{}\
             <label>Address or prefix <input type=\"text\" name=\"address\" required></label> ",
            viewer.form_fields("/whitelist")
        );
        let services: Vec<&str> = engine.config.services.all().iter().map(|s| s.name.as_str()).collect();
        select(&mut out, "service", "service", &services, services.first().copied(), false);
        out.push_str(
            " <label>Name <input type=\"text\" name=\"name\"></label> <label>Reason <input type=\"text\" name=\"reason\" \
             required></label> <button>Add</button></fieldset></form>",
        );
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

/// `/suggestions`: hosts not on the whitelist that behave like servers.
pub fn suggestions(engine: &Engine, viewer: &Viewer, shown_notice: Option<&str>) -> Result<String, PageError> {
    let detector = engine.detector();
    let mut suggested: Vec<HostReport> = Vec::new();
    for service in detector.services() {
        suggested.extend(detector.hosts(&*engine.store, service)?.into_iter().filter(|r| r.suggest_whitelist));
    }
    let mut out = String::new();
    head(&mut out, "suggestions", viewer);
    notice(&mut out, shown_notice);
    let _ = write!(
        out,
        "<h1>Suggestions</h1><p class=\"muted\">{} host(s) behave like servers but are not on the whitelist: verify each, \
         then accept or reject it.</p><table><tr><th>host</th><th>service</th><th>evidence</th>{}</tr>",
        suggested.len(),
        if viewer.can_act { "<th>decide</th>" } else { "" }
    );
    for r in &suggested {
        let host = r.host().to_string();
        let _ = write!(
            out,
            "<tr><td><a href=\"/host/{}?service={}\">{}</a></td><td>{}</td><td>{}</td>",
            url_encode(&host),
            url_encode(&r.service),
            escape(&host),
            escape(&r.service),
            escape(&r.evidence)
        );
        if viewer.can_act {
            out.push_str("<td>");
            for (action, button) in [("accept", "Accept"), ("reject", "Reject")] {
                let _ = write!(
                    out,
                    "<form method=\"post\" action=\"/act/{action}\" class=\"inline\">{}<input type=\"hidden\" name=\"host\" value=\"{}\">\
                     <input type=\"hidden\" name=\"service\" value=\"{}\"><input type=\"text\" name=\"reason\" required placeholder=\"why\" \
                     aria-label=\"why {action} {}\"> <button>{button}</button></form> ",
                    viewer.form_fields("/suggestions"),
                    escape(&host),
                    escape(&r.service),
                    escape(&host)
                );
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></body></html>\n");
    Ok(out)
}

/// `/history`: the audit trail, newest first.
pub fn history(engine: &Engine, viewer: &Viewer) -> Result<String, PageError> {
    let actions = engine.store.actions()?;
    let mut out = String::new();
    head(&mut out, "history", viewer);
    let _ = write!(out, "<h1>History</h1><p class=\"muted\">{} decision(s), newest first.</p>", actions.len());
    action_table(&mut out, &actions);
    out.push_str("</body></html>\n");
    Ok(out)
}

/// The login form; `next` is where a login goes.
pub fn login(next: &str, failed: Option<&str>) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>log in &middot; rogue</title>\
         <link rel=\"stylesheet\" href=\"/console.css\"></head><body><h1>rogue</h1>"
    );
    if let Some(message) = failed {
        let _ = write!(out, "<p class=\"state-open\" role=\"alert\">{}</p>", escape(message));
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
         <p><label>Name <input type=\"text\" name=\"name\" autocomplete=\"username\" required></label></p>\
         <p><label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label></p>\
         <p><button>Log in</button></p></form></body></html>",
        escape(next)
    );
    out
}
