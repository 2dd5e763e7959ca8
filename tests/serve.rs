//! `rogue serve`, the web console: pages and actions in headless Chromium
//! checked against what the CLI then reads from the same store and
//! whitelist file; requests that must be refused (no session, no CSRF
//! token, a wrong password, actions switched off); and the rules that keep
//! it closed by default.

use std::{path::Path, process::Command, time::Duration};

use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    process::{ROGUE, Running},
    require,
};
use serde_json::Value;

const NETWORKS: &str = "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\n";
const PASSWORD: &str = "correct horse battery staple";

/// A users file with `ana`, hashed by `rogue serve --hash-password`.
fn users_file(workspace: &Workspace) {
    use std::io::Write;
    let mut hashing = Command::new(ROGUE)
        .args(["serve", "--hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(hashing.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let hashed = hashing.wait_with_output().unwrap();
    assert!(hashed.status.success());
    let hash = String::from_utf8(hashed.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    std::fs::write(workspace.dir.join("users.yaml"), format!("- name: ana\n  password_hash: '{}'\n", hash.trim()))
        .unwrap();
}

/// `rogue serve` on a port of its choosing; its base URL.
pub(crate) fn serve(workspace: &Workspace) -> (Running, String) {
    let mut command = Command::new(ROGUE);
    command.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(workspace.config());
    let mut running = Running::spawn(command);
    let line = running.stderr_line("the console is at ");
    let url = line.split("the console is at ").nth(1).unwrap().split('/').take(3).collect::<Vec<_>>().join("/");
    (running, url)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(30)).build()
}

/// The status of a response, whether ureq calls it an error or not.
fn status(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(response) => (response.status(), response.header("location").unwrap_or("").to_string()),
        Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    }
}

fn console_workspace(name: &str) -> Workspace {
    let config = format!("{NETWORKS}serve: {{allow_actions: true, users_file: users.yaml}}\n");
    let workspace = Workspace::new(name, &config, &example_whitelist());
    users_file(&workspace);
    workspace.analyze(&[&scenario_capture("all", 1)]);
    workspace
}

fn open_findings(workspace: &Workspace, state: &str) -> Vec<Value> {
    workspace.json(&["findings", "--state", state, "--format", "jsonl"])
}

#[test]
fn analysts_triage_in_the_browser_and_the_cli_reads_what_they_decided() {
    require("node");
    require("chromium");
    let workspace = console_workspace("serve-browser");
    let open_before = open_findings(&workspace, "open");
    let (_server, url) = serve(&workspace);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/console.mjs");
    assert!(script.with_file_name("node_modules").exists(), "run `cargo xtask setup` to install playwright-core");
    let output = Command::new("node").arg(&script).args([&url, "ana", PASSWORD]).arg(&workspace.dir).output().unwrap();
    assert!(output.status.success(), "chromium: {}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["errors"], serde_json::json!([]), "no errors, no request off the server");

    // Logged in from the login page, then the open findings, most severe first.
    assert_eq!(seen["login_path"], "/login");
    assert_eq!(seen["after_login"]["path"], "/");
    let rows = seen["findings"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), open_before.len(), "every open finding is listed: {rows:?}");
    let severities: Vec<&str> = rows.iter().map(|r| r[1].as_str().unwrap()).collect();
    let rank = |s: &str| ["high", "medium", "low"].iter().position(|l| *l == s).unwrap();
    assert!(severities.windows(2).all(|w| rank(w[0]) <= rank(w[1])), "sorted by severity: {severities:?}");

    // The host's page: the advice in plain words, the plots inline.
    let host = &seen["host"];
    assert_eq!(host["path"], "/host/192.0.2.60");
    assert_eq!(host["h1"], "192.0.2.60");
    assert_eq!(host["inline_svgs"], 3);
    assert_eq!(host["images"], 0);
    assert_eq!(
        host["advice"],
        "This host is sending mail directly to 75 mail servers on the Internet, and it is not a registered mail \
         server.\n\nNext step: If it should, register it with the team that runs mail. If not, check its mail \
         configuration (it should go through the organisation's own servers) and look for malware sending mail."
    );
    let headings: Vec<&str> = host["headings"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert_eq!(
        headings,
        [
            "Verdict",
            "Decide",
            "Port usage",
            "Activity history",
            "Beside a whitelisted mail server",
            "0 clients connecting inbound",
            "87 servers connecting outbound",
            "Whitelist"
        ]
    );
    assert_eq!(host["printed_forms"], 0, "the printed page has no forms");
    assert!(std::fs::metadata(workspace.dir.join("host.pdf")).unwrap().len() > 10_000);

    // Each action came back with its notice, and the CLI reads its effect.
    assert_eq!(seen["rejected"]["notice"], "192.0.2.60 recorded as a confirmed rogue smtp server; 2 finding(s) marked");
    let rejected: Vec<(String, String)> = open_findings(&workspace, "confirmed_rogue")
        .iter()
        .map(|f| (f["host"].as_str().unwrap().into(), f["kind"].as_str().unwrap().into()))
        .collect();
    assert_eq!(rejected, [("192.0.2.60".into(), "fanout_burst".into()), ("192.0.2.60".into(), "rogue_server".into())]);
    let history = seen["rejected"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "the header and the rejection: {history:?}");
    assert_eq!(
        history[1].as_array().unwrap()[1..],
        ["ana", "reject", "smtp", "192.0.2.60", "", "sends spam, ticket 42", "web"]
    );

    assert!(seen["suggested"].as_array().unwrap().contains(&"192.0.2.77".into()), "{}", seen["suggested"]);
    assert_eq!(seen["accepted"]["notice"], "192.0.2.77 whitelisted for smtp; 1 finding(s) marked whitelisted");
    let whitelist = std::fs::read_to_string(workspace.dir.join("whitelist.yaml")).unwrap();
    assert!(whitelist.starts_with(&example_whitelist()), "the file's comments and entries are kept:\n{whitelist}");
    let accepted = workspace.json(&["whitelist", "list", "--format", "jsonl"]);
    let entry = accepted.iter().find(|e| e["address"] == "192.0.2.77").expect("accepted into the whitelist");
    assert_eq!(
        (entry["verified_by"].as_str(), entry["reason"].as_str()),
        (Some("ana"), Some("the lab relay, ticket 7"))
    );

    let id: i64 = seen["acknowledged_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(seen["acknowledged"]["notice"], "1 finding(s) acknowledged by ana");
    let acknowledged = open_findings(&workspace, "acknowledged");
    assert_eq!(acknowledged.len(), 1);
    assert_eq!(acknowledged[0]["id"], id);
    assert_eq!(acknowledged[0]["acknowledged"]["by"], "ana");
    assert_eq!(acknowledged[0]["acknowledged"]["reason"], "seen, ticket 9");
    assert_eq!(
        seen["open_after"].as_u64().unwrap() as usize,
        open_before.len() - 2 - 1 - 1,
        "two rejected, one accepted, one acknowledged"
    );

    assert_eq!(seen["added"]["notice"], "192.0.2.99 added to the whitelist");
    assert!(seen["added"]["entries"].as_array().unwrap().iter().any(|e| e[0] == "192.0.2.99" && e[3] == "ana"));
    assert_eq!(seen["removed"]["notice"], "removed 1 whitelist entry for 192.0.2.99");
    assert_eq!(std::fs::read_to_string(workspace.dir.join("whitelist.yaml")).unwrap(), whitelist, "as before the add");

    // The audit trail, newest first: who, what, on what, why, through the web.
    let trail: Vec<Vec<String>> = seen["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap()[1..].iter().map(|c| c.as_str().unwrap().to_string()).collect())
        .collect();
    let acknowledged_host = acknowledged[0]["host"].as_str().unwrap();
    assert_eq!(
        trail,
        [
            ["ana", "whitelist_remove", "smtp", "192.0.2.99", "", "test over", "web"],
            ["ana", "whitelist_add", "smtp", "192.0.2.99", "", "test relay, ticket 11", "web"],
            [
                "ana",
                "acknowledge",
                acknowledged[0]["service"].as_str().unwrap(),
                acknowledged_host,
                &id.to_string(),
                "seen, ticket 9",
                "web"
            ],
            ["ana", "accept", "smtp", "192.0.2.77", "", "the lab relay, ticket 7", "web"],
            ["ana", "reject", "smtp", "192.0.2.60", "", "sends spam, ticket 42", "web"],
        ]
        .map(|row| row.map(String::from).to_vec())
    );
}

#[test]
fn requests_without_a_session_a_form_token_or_the_password_are_refused() {
    let workspace = console_workspace("serve-refused");
    let (_server, url) = serve(&workspace);
    let http = agent();
    let before = open_findings(&workspace, "open");

    // Every page leads to the login first.
    assert_eq!(status(http.get(&format!("{url}/")).call()), (303, "/login?next=/".into()));
    assert_eq!(status(http.get(&format!("{url}/host/192.0.2.60")).call()).0, 303);
    let act = |cookie: Option<&str>, form: &[(&str, &str)]| {
        let mut request = http.post(&format!("{url}/act/reject"));
        if let Some(cookie) = cookie {
            request = request.set("Cookie", cookie);
        }
        status(request.send_form(form))
    };
    let reject = [("host", "192.0.2.60"), ("service", "smtp"), ("reason", "forged")];
    let (code, body) = act(None, &reject);
    assert_eq!(code, 403);
    assert!(body.contains("Log in to act"), "{body}");

    let (code, _) = status(http.post(&format!("{url}/login")).send_form(&[("name", "ana"), ("password", "wrong")]));
    assert_eq!(code, 401, "a wrong password");
    let (code, _) = status(http.post(&format!("{url}/login")).send_form(&[("name", "nobody"), ("password", PASSWORD)]));
    assert_eq!(code, 401, "a name not in the users file");
    let login = http.post(&format!("{url}/login")).send_form(&[("name", "ana"), ("password", PASSWORD)]).unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    assert!(login.header("set-cookie").unwrap().contains("HttpOnly; SameSite=Strict"));

    // A session alone is not enough: the form must carry its token.
    let (code, body) = act(Some(&cookie), &reject);
    assert_eq!(code, 403);
    assert!(body.contains("CSRF"), "{body}");
    let (code, _) = act(Some(&cookie), &[&reject[..], &[("csrf", &"0".repeat(64))]].concat());
    assert_eq!(code, 403, "a token of another session");
    assert_eq!(open_findings(&workspace, "open"), before, "nothing was changed");

    // The page sets what no page may do: load from elsewhere, be framed.
    let page = http.get(&format!("{url}/")).set("Cookie", &cookie).call().unwrap();
    let policy = page.header("content-security-policy").unwrap().to_string();
    assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    let html = page.into_string().unwrap();
    let token = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap();
    let (code, location) =
        act(Some(&cookie), &[&reject[..], &[("csrf", token), ("back", "https://evil.example/")]].concat());
    assert_eq!((code, location.split('?').next().unwrap()), (303, "/"), "back never leaves the console");
    assert_eq!(open_findings(&workspace, "confirmed_rogue").len(), 2, "with its token, the form acts");
}

#[test]
fn the_console_is_read_only_and_on_loopback_unless_configured_otherwise() {
    let workspace = Workspace::new("serve-read-only", NETWORKS, &example_whitelist());
    workspace.analyze(&[&scenario_capture("misconfiguration", 1)]);
    let (_server, url) = serve(&workspace);
    let http = agent();
    let page = http.get(&format!("{url}/")).call().unwrap().into_string().unwrap();
    assert!(page.contains("192.0.2.60") && !page.contains("<form method=\"post\""), "pages, no forms");
    let (code, body) = status(http.post(&format!("{url}/act/ack")).send_form(&[("id", "1")]));
    assert_eq!(code, 403);
    assert!(body.contains("serve.allow_actions is false"), "{body}");
    let (code, _) = status(http.get(&format!("{url}/host/198.51.100.1")).call());
    assert_eq!(code, 404, "a host the store has no traffic of");

    // The list's filters, and the rows alone for the live refresh.
    let rows = |query: &str| -> Vec<Vec<String>> {
        let page = http.get(&format!("{url}/{query}")).call().unwrap().into_string().unwrap();
        let body = page.split("<tbody>").nth(1).map_or(page.as_str(), |b| b.split("</tbody>").next().unwrap());
        body.split("<tr>")
            .skip(1)
            .map(|row| {
                row.split("<td")
                    .skip(1)
                    .map(|cell| {
                        let text = cell.split_once('>').unwrap().1.split("</td>").next().unwrap();
                        text.split('<').next().unwrap().trim().to_string()
                    })
                    .collect()
            })
            .collect()
    };
    let all = rows("?state=all");
    assert_eq!(all.len(), workspace.json(&["findings", "--format", "jsonl"]).len());
    assert_eq!(rows("?state=all&rows=1"), all, "the refresh's rows are the page's");
    assert!(rows("?state=all&kind=fanout_burst").iter().all(|r| r[3] == "fanout_burst"));
    assert_eq!(rows("?state=all&kind=fanout_burst").len(), 1);
    assert_eq!(rows("?state=all&new=1d"), all, "every finding was first reported today");
    assert_eq!(rows("?state=acknowledged"), Vec::<Vec<String>>::new());
    // Most severe first, and within a severity the most recent first.
    let rank = |s: &str| ["high", "medium", "low"].iter().position(|l| *l == s).unwrap();
    for pair in all.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(rank(&a[0]) < rank(&b[0]) || (a[0] == b[0] && a[1] >= b[1]), "{a:?} before {b:?}");
    }
    let (code, body) = status(http.get(&format!("{url}/?new=soon")).call());
    assert_eq!(code, 400);
    assert!(body.contains("new=&quot;soon&quot;: choose 1d, 7d or 30d"), "{body}");

    let refused = workspace.rogue(&["serve", "--listen", "0.0.0.0:0"]);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("--listen 0.0.0.0:0 is not a loopback address")
            && refused.stderr.contains("serve.users_file"),
        "{}",
        refused.stderr
    );

    std::fs::write(workspace.config(), format!("{NETWORKS}serve:\n  listen: 192.0.2.1:9926\n  allow_actions: true\n"))
        .unwrap();
    let refused = workspace.rogue(&["config", "check"]);
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("serve.listen: 192.0.2.1:9926 is not a loopback address"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("serve.allow_actions: needs serve.users_file") && refused.stderr.contains("at line 4"),
        "{}",
        refused.stderr
    );
}

/// `serve.with_agent`: the collector serves the console too, and its pages
/// show what the collector found while it runs.
#[test]
fn the_collector_serves_the_console_beside_its_work() {
    use crate::collect::{export_over_tcp, free_port, stop_collector};
    let console_port = free_port();
    let config = format!(
        "{NETWORKS}metrics: {{listen: null}}\ndetection: {{evaluate_seconds: 1}}\nstore: {{retention_days: 36500}}\n\
         serve: {{listen: \"127.0.0.1:{console_port}\", with_agent: true}}\n"
    );
    let workspace = Workspace::new("serve-collector", &config, &example_whitelist());
    let port = free_port();
    let mut command = Command::new(ROGUE);
    command.args(["-v", "collect", "--no-dns", "--listen", &format!("127.0.0.1:{port}"), "--config"]);
    command.arg(workspace.config());
    let mut collector = Running::spawn(command);
    collector.wait_for_stderr(&format!("console on http://127.0.0.1:{console_port}/"), 1);
    collector.wait_for_stderr("collector running", 1);
    export_over_tcp(&scenario_capture("misconfiguration", 1), port, 1);
    let url = format!("http://127.0.0.1:{console_port}/");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = agent().get(&url).call().unwrap().into_string().unwrap();
        if page.contains("/host/192.0.2.60?") || std::time::Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(page.contains("<td>fanout_burst</td>") && page.contains("<td>rogue_server</td>"), "{page}");
    let stopped = stop_collector(collector);
    assert!(stopped.status.success(), "{}", stopped.stderr);
}
