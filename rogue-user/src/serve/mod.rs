//! The web console: `rogue serve`, or beside the agent and the collector
//! with `serve.with_agent`. Server-rendered pages over the store (the open
//! findings, one page per host, the whitelist, the suggestions, the audit
//! trail), usable without script; every asset is in the binary and the
//! Content-Security-Policy lets the browser fetch nothing from elsewhere.
//!
//! Each request opens the engine on a blocking thread, as a command would
//! (the configuration, the whitelist file and the store as they are now),
//! so the console never shows stale state; SQLite's WAL lets it read while
//! an agent writes. Read-only unless `serve.allow_actions`: then logged-in
//! analysts decide through forms carrying their session's CSRF token, one
//! decision at a time, each through `triage` as the CLI's, recorded with
//! their name.

use std::{net::IpAddr, sync::Arc, time::Instant};

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};

use crate::{
    config::Config,
    detect::whitelist::{Prefix, WhitelistEntry},
    engine::{Engine, Paths, WhitelistFile},
    store::Access,
    triage::{self, Decider, Via},
};

pub mod auth;
mod pages;

use auth::{COOKIE, Session, Sessions, Users, UsersError};
use pages::{FindingsFilter, Viewer};

/// What every request shares.
pub struct Console {
    paths: Paths,
    allow_actions: bool,
    users: Option<Users>,
    sessions: Sessions,
    /// One decision at a time: each rewrites the whitelist file.
    deciding: std::sync::Mutex<()>,
}

impl Console {
    /// The console of `config` (read from `paths.config`).
    pub fn new(paths: Paths, config: &Config) -> Result<Console, UsersError> {
        let serve = config.effective().serve;
        let users = serve.users_file.as_deref().map(Users::load).transpose()?;
        Ok(Console {
            paths,
            allow_actions: serve.allow_actions,
            users,
            sessions: Sessions::default(),
            deciding: Default::default(),
        })
    }
}

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(findings_page))
        .route("/host/{host}", get(host_page))
        .route("/whitelist", get(whitelist_page))
        .route("/suggestions", get(suggestions_page))
        .route("/history", get(history_page))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/act/{action}", post(act))
        .route("/console.css", get(|| async { asset("text/css; charset=utf-8", pages::css()) }))
        .route("/console.js", get(|| async { asset("text/javascript; charset=utf-8", pages::SCRIPT.to_string()) }))
        // Browsers ask for it whatever the page says; nothing, not an error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(|| async { pages::error(StatusCode::NOT_FOUND, "There is no such page.") })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// Serves the console on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Arc<Console>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(console)).with_graceful_shutdown(shutdown).await
}

/// No page is framed, cached, or allowed to load anything from elsewhere.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn asset(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Who is asking: with a users file, a logged-in analyst or a redirect to
/// the login page; without one, an anonymous reader.
fn viewer(console: &Console, headers: &HeaderMap, here: &str) -> Result<Viewer, Redirect> {
    if console.users.is_none() {
        return Ok(Viewer::default());
    }
    match session(console, headers) {
        Some((_, session)) => {
            Ok(Viewer { user: Some(session.user), csrf: Some(session.csrf), can_act: console.allow_actions })
        }
        None => Err(Redirect::to(&format!("/login?next={}", pages::url_encode(here)))),
    }
}

fn session(console: &Console, headers: &HeaderMap) -> Option<(String, Session)> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    let token = auth::cookie(cookies, COOKIE)?;
    Some((token.to_string(), console.sessions.get(token)?))
}

/// A page at `here`: for whoever may see it (else the login page), by
/// `render` on a blocking thread with the engine opened read-only.
async fn page(
    console: Arc<Console>,
    headers: &HeaderMap,
    here: &str,
    render: impl FnOnce(&Engine, &Viewer) -> Result<String, PageError> + Send + 'static,
) -> Response {
    let viewer = match viewer(&console, headers, here) {
        Ok(viewer) => viewer,
        Err(login) => return login.into_response(),
    };
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let engine =
            Engine::open(&console.paths, Access::ReadOnly, WhitelistFile::Existing).map_err(PageError::Failed)?;
        render(&engine, &viewer)
    })
    .await;
    tracing::debug!("page rendered in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    match result {
        Ok(Ok(html)) => pages::html(html),
        Ok(Err(PageError::NotFound(message))) => pages::error(StatusCode::NOT_FOUND, &message),
        Ok(Err(PageError::BadRequest(message))) => pages::error(StatusCode::BAD_REQUEST, &message),
        Ok(Err(PageError::Failed(e))) => pages::error(StatusCode::INTERNAL_SERVER_ERROR, &crate::with_causes(&*e)),
        Err(panic) => pages::error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the page failed: {panic}")),
    }
}

/// Why a page could not be shown.
pub enum PageError {
    NotFound(String),
    BadRequest(String),
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError::Failed(e.into())
    }
}

async fn findings_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filter): Query<FindingsFilter>,
) -> Response {
    let here = filter.url();
    page(console, &headers, &here, move |engine, viewer| pages::findings(engine, viewer, &filter)).await
}

#[derive(serde::Deserialize, Default)]
struct HostQuery {
    service: Option<String>,
    notice: Option<String>,
}

async fn host_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(host): Path<String>,
    Query(query): Query<HostQuery>,
) -> Response {
    let here = format!("/host/{}", pages::url_encode(&host));
    page(console, &headers, &here, move |engine, viewer| {
        let host: IpAddr = host.parse().map_err(|_| PageError::BadRequest(format!("{host:?} is not an IP address")))?;
        pages::host(engine, viewer, host, query.service.as_deref(), query.notice.as_deref())
    })
    .await
}

#[derive(serde::Deserialize, Default)]
struct NoticeQuery {
    notice: Option<String>,
}

async fn whitelist_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<NoticeQuery>,
) -> Response {
    page(console, &headers, "/whitelist", move |engine, viewer| {
        pages::whitelist(engine, viewer, query.notice.as_deref())
    })
    .await
}

async fn suggestions_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<NoticeQuery>,
) -> Response {
    page(console, &headers, "/suggestions", move |engine, viewer| {
        pages::suggestions(engine, viewer, query.notice.as_deref())
    })
    .await
}

async fn history_page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    page(console, &headers, "/history", pages::history).await
}

#[derive(serde::Deserialize, Default)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_form(State(console): State<Arc<Console>>, Query(query): Query<LoginQuery>) -> Response {
    if console.users.is_none() {
        return Redirect::to("/").into_response();
    }
    pages::html(pages::login(&local_path(query.next.as_deref()), None))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

async fn login(State(console): State<Arc<Console>>, Form(form): Form<LoginForm>) -> Response {
    let next = local_path(form.next.as_deref());
    let checking = console.clone();
    let (name, password) = (form.name.clone(), form.password);
    let accepted =
        tokio::task::spawn_blocking(move || checking.users.as_ref().is_some_and(|users| users.check(&name, &password)))
            .await
            .unwrap_or(false);
    if !accepted {
        tracing::warn!(target: crate::LIFECYCLE, "console: failed login as {:?}", form.name);
        // Slows guessing; a browser's user does not notice.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let page = pages::login(&next, Some("Wrong name or password."));
        return (StatusCode::UNAUTHORIZED, pages::html(page)).into_response();
    }
    let token = console.sessions.start(&form.name);
    tracing::info!(target: crate::LIFECYCLE, "console: {} logged in", form.name);
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
}

async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some((token, session)) = session(&console, &headers)
        && csrf_matches(&session, &form)
    {
        console.sessions.end(&token);
    }
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

fn csrf_matches(session: &Session, form: &[(String, String)]) -> bool {
    field(form, "csrf").is_some_and(|token| auth::same_secret(token, &session.csrf))
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
}

/// A path on this server to go back to (never another site: `//host` or a
/// scheme are refused for `/`).
fn local_path(path: Option<&str>) -> String {
    match path {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => path.to_string(),
        _ => "/".to_string(),
    }
}

/// An analyst's decision, through a form.
async fn act(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !console.allow_actions {
        return pages::error(StatusCode::FORBIDDEN, "Actions are off: serve.allow_actions is false.");
    }
    let Some((_, session)) = session(&console, &headers) else {
        return pages::error(StatusCode::FORBIDDEN, "Log in to act: this request carries no session.");
    };
    if !csrf_matches(&session, &form) {
        tracing::warn!(target: crate::LIFECYCLE, "console: {} sent /act/{action} without its form's token", session.user);
        return pages::error(StatusCode::FORBIDDEN, "This form is not one the console gave this session (CSRF check).");
    }
    let back = local_path(field(&form, "back"));
    let deciding = console.clone();
    let decided = tokio::task::spawn_blocking(move || {
        let _one_at_a_time = deciding.deciding.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut engine = Engine::open(&deciding.paths, Access::ReadWrite, WhitelistFile::Started)?;
        decide(&mut engine, &action, &form, &Decider::now(session.user.clone(), Via::Web))
    })
    .await;
    match decided {
        Ok(Ok(notice)) => {
            let separator = if back.contains('?') { '&' } else { '?' };
            Redirect::to(&format!("{back}{separator}notice={}", pages::url_encode(&notice))).into_response()
        }
        Ok(Err(e)) => pages::error(StatusCode::CONFLICT, &crate::with_causes(&*e)),
        Err(panic) => pages::error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the action failed: {panic}")),
    }
}

/// Carries out `action` with the form's fields; returns what to tell the analyst.
fn decide(engine: &mut Engine, action: &str, form: &[(String, String)], decider: &Decider) -> anyhow::Result<String> {
    let required = |name: &str| field(form, name).ok_or_else(|| anyhow::anyhow!("the form's {name} is empty"));
    let host = || -> anyhow::Result<IpAddr> {
        let text = required("host")?;
        text.parse().map_err(|_| anyhow::anyhow!("{text:?} is not an IP address"))
    };
    let reason = field(form, "reason");
    Ok(match action {
        "ack" => {
            let ids: Vec<i64> = form
                .iter()
                .filter(|(name, _)| name == "id")
                .map(|(_, id)| id.trim().parse().map_err(|_| anyhow::anyhow!("{id:?} is not a finding id")))
                .collect::<anyhow::Result<_>>()?;
            if ids.is_empty() {
                anyhow::bail!("no finding was chosen");
            }
            triage::acknowledge(engine, &ids, decider, reason)?;
            format!("{} finding(s) acknowledged by {}", ids.len(), decider.by)
        }
        "accept" => {
            let (host, service) = (host()?, required("service")?);
            let closed = triage::accept(engine, host, service, decider, required("reason")?)?;
            format!("{host} whitelisted for {service}; {closed} finding(s) marked whitelisted")
        }
        "reject" => {
            let (host, service) = (host()?, required("service")?);
            let marked = triage::reject(engine, host, service, decider, required("reason")?)?;
            format!("{host} recorded as a confirmed rogue {service} server; {marked} finding(s) marked")
        }
        "whitelist-add" => {
            let text = required("address")?;
            let address: Prefix = text.parse().map_err(|e| anyhow::anyhow!("{text:?}: {e}"))?;
            let entry = WhitelistEntry {
                address,
                service: required("service")?.into(),
                name: field(form, "name").map(String::from),
                reason: Some(required("reason")?.into()),
                verified_by: Some(decider.by.clone()),
                verified_on: Some(decider.today),
                force: false,
            };
            triage::add_entry(&mut engine.whitelist, Some(&mut *engine.store as _), entry, decider)?;
            format!("{address} added to the whitelist")
        }
        "whitelist-remove" => {
            let text = required("address")?;
            let address: Prefix = text.parse().map_err(|e| anyhow::anyhow!("{text:?}: {e}"))?;
            let store = Some(&mut *engine.store as _);
            let removed = triage::remove_entry(
                &mut engine.whitelist,
                store,
                address,
                field(form, "service"),
                decider,
                reason.unwrap_or(""),
            )?;
            format!("removed {removed} whitelist entr{} for {address}", if removed == 1 { "y" } else { "ies" })
        }
        other => anyhow::bail!("there is no action {other:?}"),
    })
}
