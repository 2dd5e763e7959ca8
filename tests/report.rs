//! `rogue report`: the plot data against the traffic itself, the figures as
//! real PNG and SVG files, the page in headless Chromium, the index of all
//! hosts, hostile names escaped, and a long period kept readable.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use rogue_testkit::{
    analysis::{Workspace, example_whitelist, scenario_capture},
    dns::{Nsd, scenario_zones},
    process::ROGUE,
    require,
};
use serde_json::Value;

const CONFIG: &str = "internal_networks: [192.0.2.0/24, 2001:db8:10::/48]\n";

fn report(workspace: &Workspace, args: &[&str]) -> PathBuf {
    let out = workspace.dir.join(format!("report-{}", args.join("-").replace(['.', ':', '/'], "_")));
    let mut full = vec!["report", "--out", out.to_str().unwrap()];
    full.extend_from_slice(args);
    let finished = workspace.rogue(&full);
    assert!(finished.status.success(), "rogue report failed:\n{}", finished.stderr);
    assert!(finished.stderr.contains("files to"), "{}", finished.stderr);
    out
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Nearest rank, as the report documents it.
fn quartile(sorted: &[u64], p: f64) -> u64 {
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Every cell of the existence plots, and the quartiles, equal what the
/// flows of the capture give when binned and classified by hand.
#[test]
fn the_existence_plots_hold_exactly_the_ports_bins_and_volume_classes_of_the_traffic() {
    let capture = scenario_capture("vpn-failure", 1);
    let workspace = Workspace::new("report-data", CONFIG, &example_whitelist());
    workspace.analyze(&[&capture]);
    let out = report(&workspace, &["--host", "192.0.2.77", "--bin", "1800"]);
    let flows =
        Command::new(ROGUE).args(["-q", "flows", "--format", "jsonl", "--pcap"]).arg(&capture).output().unwrap();
    let flows: Vec<Value> =
        String::from_utf8(flows.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();

    for (direction, side, port_field) in [("inbound", "dst", "dport"), ("outbound", "src", "sport")] {
        let plot = json(&out.join(format!("existence-{direction}.json")));
        let (bin, from, to) =
            (plot["bin_seconds"].as_i64().unwrap(), plot["from"].as_i64().unwrap(), plot["to"].as_i64().unwrap());
        assert_eq!(bin, 1800);
        let mut expected: BTreeMap<(i64, u64), u64> = BTreeMap::new();
        for flow in flows.iter().filter(|f| f[side] == "192.0.2.77" && [6, 17].contains(&f["proto"].as_u64().unwrap()))
        {
            let start: jiff::Timestamp = flow["start"].as_str().unwrap().parse().unwrap();
            let start = start.as_second();
            if start >= from && start < to {
                *expected.entry((start.div_euclid(bin) * bin, flow[port_field].as_u64().unwrap())).or_default() +=
                    flow["bytes"].as_u64().unwrap();
            }
        }
        let mut volumes: Vec<u64> = expected.values().copied().collect();
        volumes.sort_unstable();
        let (q1, q3) = (quartile(&volumes, 0.25), quartile(&volumes, 0.75));
        assert_eq!((plot["q1"].as_u64(), plot["q3"].as_u64()), (Some(q1), Some(q3)), "{direction} quartiles");
        let class = |v: u64| {
            if v <= q1 {
                1
            } else if v <= q3 {
                2
            } else {
                3
            }
        };
        let expected: Vec<(i64, u64, u64, u64)> = expected.into_iter().map(|((b, p), v)| (b, p, v, class(v))).collect();
        let cells: Vec<(i64, u64, u64, u64)> = plot["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["bin"].as_i64().unwrap(),
                    c["port"].as_u64().unwrap(),
                    c["bytes"].as_u64().unwrap(),
                    c["class"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(cells, expected, "{direction} cells");
        if direction == "outbound" {
            // The VPN case as the method saw it: low source ports outbound,
            // the mail services' ports, in bin after bin.
            let mut low: Vec<u64> = cells.iter().map(|c| c.1).filter(|&p| p < 1024).collect();
            low.sort_unstable();
            let bins_on_25 = low.iter().filter(|&&p| p == 25).count();
            low.dedup();
            assert_eq!(low, [25, 110, 143, 465, 587, 993, 995]);
            assert!(bins_on_25 > 200, "source port 25 in {bins_on_25} bins");
        }
        assert!(
            cells.len() > 500 && (1..=3).all(|c| cells.iter().any(|cell| cell.3 == c)),
            "{direction}: {} cells",
            cells.len()
        );
    }
}

fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

#[test]
fn the_figures_are_pngs_of_the_stated_size_with_ink_and_svgs_that_parse() {
    let workspace = Workspace::new("report-images", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("new-mail-servers", 1)]);
    let out = report(&workspace, &["--host", "192.0.2.40"]);
    for (name, size) in
        [("existence-inbound", (1200, 560)), ("existence-outbound", (1200, 560)), ("activity", (1200, 640))]
    {
        let (width, height, pixels) = decode_png(&out.join(format!("{name}.png")));
        assert_eq!((width, height), size, "{name}");
        let ink = pixels.chunks(3).filter(|p| p.iter().any(|&c| c < 200)).count();
        let colours: std::collections::BTreeSet<&[u8]> = pixels.chunks(3).collect();
        assert!(ink > 5_000 && colours.len() > 10, "{name}: {ink} dark pixels, {} colours", colours.len());
        let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
        let document = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{name}.svg: {e}"));
        assert_eq!(document.root_element().tag_name().name(), "svg");
        assert!(svg.contains("192.0.2.40"), "{name}.svg names the host");
    }
    let legend = json(&out.join("existence-inbound.json"));
    let (q1, q3) = (legend["q1"].as_u64().unwrap(), legend["q3"].as_u64().unwrap());
    let svg = std::fs::read_to_string(out.join("existence-inbound.svg")).unwrap();
    assert!(
        svg.contains(&format!("{} - {q1}", legend["min"])) && svg.contains(&format!("&gt; {q3}")),
        "the legend gives the ranges"
    );
    // The activity shows the step: 6 SMTP flows a day, then 14,000 from 2008-02-23.
    let days = json(&out.join("activity.json"));
    let step_day = "2008-02-23T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second() / 86_400;
    let smtp: Vec<(i64, u64, u64)> = days
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["service_flows"].as_u64() > Some(0))
        .map(|d| {
            (d["day"].as_i64().unwrap(), d["service_flows"].as_u64().unwrap(), d["service_bytes"].as_u64().unwrap())
        })
        .collect();
    let (before, after): (Vec<&(i64, u64, u64)>, Vec<_>) = smtp.iter().partition(|d| d.0 < step_day);
    assert!(!before.is_empty() && before.iter().all(|d| d.1 == 6), "{smtp:?}");
    assert!(!after.is_empty() && after.iter().all(|d| d.1 == 14_000), "{smtp:?}");
    assert!(after[0].2 > 1_000 * before[0].2, "bytes per day step too: {smtp:?}");
}

/// Runs tests/browser/check.mjs on a page: what Chromium loaded.
fn open_in_chromium(page: &Path, screenshot: &Path) -> Value {
    require("node");
    require("chromium");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/check.mjs");
    assert!(script.with_file_name("node_modules").exists(), "run `cargo xtask setup` to install playwright-core");
    let output =
        Command::new("node").arg(&script).arg(format!("file://{}", page.display())).arg(screenshot).output().unwrap();
    assert!(output.status.success(), "chromium: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_page_opens_in_headless_chromium_with_the_verdict_both_plots_and_both_tables() {
    let workspace = Workspace::new("report-browser", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("misconfiguration", 1)]);
    let out = report(&workspace, &["--host", "192.0.2.60"]);
    let screenshot = out.join("screenshot.png");
    let page = open_in_chromium(&out.join("index.html"), &screenshot);
    assert_eq!(page["errors"], serde_json::json!([]), "no errors, no network requests");
    assert_eq!(page["h1"], "192.0.2.60");
    let images: Vec<(String, u64)> = page["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["src"].as_str().unwrap().into(), i["width"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        images,
        [
            ("existence-inbound.png".into(), 1200),
            ("existence-outbound.png".into(), 1200),
            ("activity.png".into(), 1200)
        ]
    );
    let headings: Vec<&str> = page["headings"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    // All of the host's traffic: the burst to 12 servers on 02-08 and to 75
    // on 03-10; and beside it the busiest whitelisted MX.
    assert_eq!(
        headings,
        [
            "Verdict",
            "Port usage",
            "Activity history",
            "Beside a whitelisted mail server",
            "0 clients connecting inbound",
            "87 servers connecting outbound"
        ]
    );
    let text = page["text"].as_str().unwrap();
    assert!(text.contains("rogue_server") && text.contains("fanout_burst") && text.contains("203.0.113.101"), "{text}");
    let (width, height, _) = decode_png(&screenshot);
    assert!(width >= 1300 && height > 2000, "a full-page screenshot: {width}x{height}");

    // The period can be narrowed: March alone has the burst to 75.
    let march = report(&workspace, &["--host", "192.0.2.60", "--from", "2008-03-01"]);
    let html = std::fs::read_to_string(march.join("index.html")).unwrap();
    assert!(html.contains("<h2>75 servers connecting outbound</h2>"), "{html}");
}

#[test]
fn all_writes_an_index_linking_a_report_for_every_host_with_findings() {
    let workspace = Workspace::new("report-all", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("all", 1)]);
    let out = report(&workspace, &["--all"]);
    let page = open_in_chromium(&out.join("index.html"), &out.join("screenshot.png"));
    assert_eq!(page["errors"], serde_json::json!([]));
    let links: Vec<&str> = page["links"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(
        links,
        [
            "192.0.2.40-smtp/index.html",
            "192.0.2.41-smtp/index.html",
            "192.0.2.60-smtp/index.html",
            "192.0.2.77-smtp/index.html"
        ]
    );
    for link in links {
        assert!(out.join(link).exists(), "{link}");
        assert!(out.join(link).with_file_name("existence-inbound.svg").exists());
    }
    assert!(page["text"].as_str().unwrap().contains("1 fanout_burst, 1 rogue_server"));
}

#[test]
fn hostile_names_are_escaped_in_the_html_and_the_svg() {
    // The reported host itself has a hostile PTR name, so it reaches the
    // figures' titles too.
    let zones: Vec<(&str, String)> = scenario_zones()
        .into_iter()
        .map(|(origin, text)| {
            (
                origin,
                text.replace("60 IN PTR mail.example.org.", "60 IN PTR \\060img\\032src=x\\062\\\"evil.example.org."),
            )
        })
        .collect();
    let nsd = Nsd::start("report-hostile", &zones);
    let config = format!("{CONFIG}dns: {{servers: [\"{}\"], mx_domains: [example.org]}}\n", nsd.addr);
    let workspace = Workspace::with_dns("report-hostile", &config, &example_whitelist());
    workspace.analyze(&[&scenario_capture("misconfiguration", 1)]);
    let out = report(&workspace, &["--host", "192.0.2.60", "--resolve"]);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let name = "\\060img\\032src\\061x\\062\\034evil.example.org";
    assert!(html.contains(name), "the host's hostile name, escaped");
    assert!(html.contains("bad\\007bell\\000nul\\060script\\062"), "a peer's hostile name, escaped");
    for forbidden in ["<img src=x", "<script>", "\u{7}", "\u{0}"] {
        assert!(!html.contains(forbidden), "{forbidden:?} in the page");
    }
    let svg = std::fs::read_to_string(out.join("existence-inbound.svg")).unwrap();
    roxmltree::Document::parse(&svg).unwrap();
    assert!(svg.contains(name) && !svg.contains("<img"));
    let page = open_in_chromium(&out.join("index.html"), &out.join("screenshot.png"));
    assert_eq!(page["errors"], serde_json::json!([]));
    assert_eq!(page["images"].as_array().unwrap().len(), 3, "no image came from the name");

    // The console's page of the host shows the names the store holds, as escaped.
    let (_console, url) = crate::serve::serve(&workspace);
    let html = ureq::get(&format!("{url}/host/192.0.2.60")).call().unwrap().into_string().unwrap();
    assert!(html.contains(name), "the host's hostile name, escaped, in the console");
    for forbidden in ["<img", "<script>", "\u{7}", "\u{0}"] {
        assert!(!html.contains(forbidden), "{forbidden:?} in the console's page");
    }
}

/// Six months of a host on thousands of ports: the bins widen so the plot
/// keeps at most 1,500 columns, and the report is written in seconds.
#[test]
fn months_of_traffic_on_thousands_of_ports_make_one_readable_plot() {
    use rogue::{config::Config, flows::FlowRecord, profile::Profiler, time::NANOS_PER_SEC};
    let workspace = Workspace::new("report-long", CONFIG, &example_whitelist());
    let config = Config::load(&workspace.config()).unwrap();
    let mut store = rogue::store::open(&config, &config.store_path(), rogue::store::Access::Create).unwrap();
    let mut profiler = Profiler::new(config.internal_networks.clone(), config.services.all().to_vec(), 600);
    let start = 1_199_145_600 * NANOS_PER_SEC; // 2008-01-01
    for i in 0..200_000i64 {
        let port = 1024 + (i * 7919 % 60_000) as u16;
        profiler.add(&FlowRecord {
            src: "198.51.100.9".parse().unwrap(),
            dst: "192.0.2.99".parse().unwrap(),
            sport: 40_000,
            dport: if i % 10 == 0 { (i % 1000) as u16 } else { port },
            proto: 6,
            packets: 4,
            bytes: 300 + (i % 5000) as u64,
            start: start + i * 78 * NANOS_PER_SEC, // 180 days
            end: start + i * 78 * NANOS_PER_SEC,
            tcp_flags: 0x1b,
            ifindex: 0,
            interface: None,
        });
    }
    let mut ingest = store.ingest().unwrap();
    let source = ingest.add_source("capture", "synthetic", 0).unwrap();
    ingest.write(source, config.services.all(), &profiler.take()).unwrap();
    let span = rogue::profile::FlowSpan {
        flows: 200_000,
        packets: 800_000,
        first: Some(start),
        last: Some(start + 180 * 86_400 * NANOS_PER_SEC),
    };
    ingest.extend_source(source, &span).unwrap();
    ingest.commit().unwrap();
    drop(store);

    let started = std::time::Instant::now();
    let out = report(&workspace, &["--host", "192.0.2.99"]);
    let took = started.elapsed();
    let plot = json(&out.join("existence-inbound.json"));
    let (bin, from, to) =
        (plot["bin_seconds"].as_i64().unwrap(), plot["from"].as_i64().unwrap(), plot["to"].as_i64().unwrap());
    assert!((to - from) / bin <= 1_500, "{} columns", (to - from) / bin);
    assert_eq!(bin % 600, 0, "a multiple of the store's bins");
    let ports: std::collections::BTreeSet<u64> =
        plot["cells"].as_array().unwrap().iter().map(|c| c["port"].as_u64().unwrap()).collect();
    assert!(ports.len() > 5_000, "{} ports", ports.len());
    eprintln!("report of 180 days on {} ports: {bin} s bins, written in {took:.2?}", ports.len());
}

#[test]
fn errors_name_the_host_or_the_period_at_fault() {
    let workspace = Workspace::new("report-errors", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("misconfiguration", 1)]);
    let out = workspace.dir.join("report-errors");
    let out = out.to_str().unwrap();
    let unknown = workspace.rogue(&["report", "--host", "198.51.100.1", "--out", out]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(unknown.stderr.contains("the store has no traffic of 198.51.100.1"), "{}", unknown.stderr);
    let empty = workspace.rogue(&["report", "--host", "192.0.2.60", "--from", "2009-01-01", "--out", out]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        empty.stderr.contains("the period is empty") && empty.stderr.contains("192.0.2.60 from 2008-02-"),
        "{}",
        empty.stderr
    );
    let zero_bin = workspace.rogue(&["report", "--host", "192.0.2.60", "--bin", "0", "--out", out]);
    assert_eq!(zero_bin.status.code(), Some(2), "{}", zero_bin.stderr);
    assert!(!Path::new(out).exists(), "nothing written on an error");
}

/// A link where a report file or a host's directory goes (in a shared
/// output directory, before a root run) is replaced or refused, never
/// followed: what it points at stays as it was.
#[test]
fn links_in_the_output_directory_are_not_followed() {
    let workspace = Workspace::new("report-links", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("vpn-failure", 1)]);
    let victim = workspace.dir.join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let out = workspace.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for name in ["index.html", "activity.png", "existence-inbound.svg"] {
        std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
    }
    let finished = workspace.rogue(&["report", "--host", "192.0.2.77", "--out", out.to_str().unwrap()]);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    for name in ["index.html", "activity.png", "existence-inbound.svg"] {
        let metadata = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert!(metadata.is_file(), "{name} is the report's own file now");
    }
    assert!(std::fs::read_to_string(out.join("index.html")).unwrap().contains("192.0.2.77"));

    // --all: a link where a host's directory belongs is refused.
    let all = workspace.dir.join("all");
    std::fs::create_dir_all(&all).unwrap();
    let elsewhere = workspace.dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, all.join("192.0.2.77-smtp")).unwrap();
    let refused = workspace.rogue(&["report", "--all", "--out", all.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("192.0.2.77-smtp: it is not a directory (a symbolic link?)"), "{}", refused.stderr);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing was written through the link");
}

/// A report for a service beyond mail: the page, the activity and the
/// existence plot speak of the service (RDP's port 3389 labelled though it
/// is not reserved), and `--all` writes a page per host and service.
#[test]
fn a_report_follows_its_service_and_labels_the_services_own_ports() {
    let config = format!("{CONFIG}services: {{smtp: {{}}, rdp: {{}}, ssh: {{}}}}\n");
    let workspace = Workspace::new("report-rdp", &config, &example_whitelist());
    let findings = workspace.analyze(&[&scenario_capture("services", 1)]);
    let rdp = findings.iter().find(|f| f["service"] == "rdp").expect("an rdp finding");
    let out = report(&workspace, &["--host", "192.0.2.33"]);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    for text in [
        "<th>RDP flows</th>",
        "<th>RDP share</th>",
        "<th>DNS record</th><td>none checked for the service</td>",
        "acted as an RDP server",
    ] {
        assert!(html.contains(text), "{text} missing from the page");
    }
    assert!(!html.contains("SMTP"), "the page is the RDP one");
    let days = json(&out.join("activity.json"));
    let rdp_flows: u64 = days.as_array().unwrap().iter().map(|d| d["service_flows"].as_u64().unwrap()).sum();
    // Every RDP session of the period (8 a day for 29 days, two flows
    // each), not the finding's look-back of 14 days.
    assert_eq!(rdp_flows, 29 * 8 * 2, "the activity counts the service's flows");
    assert!(rdp["flows"].as_u64().unwrap() < rdp_flows);
    let svg = std::fs::read_to_string(out.join("existence-inbound.svg")).unwrap();
    assert!(svg.contains(">\n3389\n</text>"), "the service's port is labelled");

    let out = workspace.dir.join("all-services");
    let all = workspace.rogue(&["report", "--all", "--out", out.to_str().unwrap()]);
    assert!(all.status.success(), "{}", all.stderr);
    for dir in ["192.0.2.33-rdp", "192.0.2.53-ssh"] {
        assert!(out.join(dir).join("index.html").is_file(), "{dir}");
    }
    // A service taken out of the configuration: its findings' pages are
    // not written, and rogue says so.
    std::fs::write(workspace.config(), format!("{CONFIG}services: {{smtp: {{}}, rdp: {{}}}}\n")).unwrap();
    let out = workspace.dir.join("without-ssh");
    let without = workspace.rogue(&["report", "--all", "--out", out.to_str().unwrap()]);
    assert!(without.status.success(), "{}", without.stderr);
    assert!(
        without.stderr.contains("192.0.2.53 has findings of ssh, which is no longer configured: no page for them"),
        "{}",
        without.stderr
    );
    assert!(out.join("192.0.2.33-rdp").is_dir() && !out.join("192.0.2.53-ssh").exists());
    let unknown = workspace.rogue(&["report", "--host", "192.0.2.33", "--service", "ntp", "--out", "x"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(unknown.stderr.contains("no service \"ntp\" in the configuration (smtp, rdp)"), "{}", unknown.stderr);
}

/// A host whose mail began in the capture: the page starts a week before
/// (the store has those days), with the days of nothing shown as zeros,
/// says when it began, and marks it on the figure.
#[test]
fn the_page_shows_the_week_before_the_service_began() {
    let workspace = Workspace::new("report-before", CONFIG, &example_whitelist());
    workspace.analyze(&[&scenario_capture("vpn-failure", 1)]);
    let out = report(&workspace, &["--host", "192.0.2.77"]);
    let days = json(&out.join("activity.json"));
    let days = days.as_array().unwrap();
    let began = days.iter().find(|d| d["service_flows"].as_u64() > Some(0)).unwrap()["day"].as_i64().unwrap();
    let first = days[0]["day"].as_i64().unwrap();
    let store_first = "2008-02-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second() / 86_400;
    assert_eq!(first, (began - 7).max(store_first), "a week before, or the store's first day");
    assert!(began > store_first, "the scenario's server starts after the capture does");
    let before: Vec<&Value> = days.iter().filter(|d| d["day"].as_i64().unwrap() < began).collect();
    assert!(!before.is_empty() && before.iter().all(|d| d["service_flows"] == 0), "{before:?}");
    let day = jiff::Timestamp::from_second(began * 86_400).unwrap().strftime("%Y-%m-%d").to_string();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains(&format!("SMTP activity began on {day}.")), "{html}");
    let svg = std::fs::read_to_string(out.join("activity.svg")).unwrap();
    assert!(svg.contains(&format!("SMTP began {day}")), "the figure marks it");
}
