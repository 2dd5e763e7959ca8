//! The hand-verified whitelist: a YAML list of entries (address or prefix,
//! service, name, reason, who verified it and when). rogue edits the file as
//! text, adding or cutting whole entries, so everything else in it (comments,
//! blank lines, the order) stays as the administrator wrote it.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{self, ConfigError};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WhitelistEntry {
    pub address: Prefix,
    #[serde(default = "default_service")]
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_on: Option<jiff::civil::Date>,
    /// An entry covering every address of a family (`0.0.0.0/0`, `::/0`)
    /// would silence every finding; it is taken only with this set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

fn default_service() -> String {
    "smtp".into()
}

/// An address or a prefix; a single address is written without `/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix(pub IpNet);

impl FromStr for Prefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Prefix, String> {
        let text = text.trim();
        if text.contains('/') {
            let net: IpNet = text.parse().map_err(|_| format!("{text:?} is not an address or prefix"))?;
            if net.trunc() != net {
                return Err(format!("{text:?} has host bits set; did you mean {}?", net.trunc()));
            }
            Ok(Prefix(net))
        } else {
            let addr: IpAddr = text.parse().map_err(|_| format!("{text:?} is not an address or prefix"))?;
            Ok(Prefix(IpNet::from(addr)))
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WhitelistError {
    #[error(transparent)]
    Read(#[from] ConfigError),
    #[error(
        "the whitelist {path} does not exist (the `whitelist` key of the configuration names it); create it (an \
         empty file is an empty whitelist) or start it with `rogue whitelist add`"
    )]
    Missing { path: PathBuf },
    #[error("{path}: {entry}{problem}")]
    Entry { path: PathBuf, entry: String, problem: String },
    /// Every entry that is wrong, each with its line.
    #[error("{}", problems.iter().map(|p| format!("{}: {p}", path.display())).collect::<Vec<_>>().join("\n"))]
    Entries { path: PathBuf, problems: Vec<String> },
    #[error("{path}: {address} is already whitelisted for {service}")]
    Duplicate { path: PathBuf, address: Prefix, service: String },
    #[error(
        "{path}: rogue edits a whitelist that is a plain list of entries, each starting with \"- \" at the start \
         of a line; this file has {entries} entries but {items} such lines"
    )]
    Layout { path: PathBuf, entries: usize, items: usize },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
}

pub struct Whitelist {
    path: PathBuf,
    /// The configured services, which entries must name.
    services: Vec<String>,
    text: String,
    entries: Vec<WhitelistEntry>,
}

impl Whitelist {
    /// Reads the whitelist at `path`, which must exist; every entry must
    /// name one of `services` and cover less than a whole address family
    /// unless it says `force: true`.
    pub fn load(path: &Path, services: &[String]) -> Result<Whitelist, WhitelistError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Whitelist::parse(path, text, services),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(WhitelistError::Missing { path: path.into() }),
            Err(source) => Err(ConfigError::Read { path: path.into(), source }.into()),
        }
    }

    /// [`load`](Self::load), but a missing file is an empty whitelist that
    /// the first entry added creates.
    pub fn load_or_new(path: &Path, services: &[String]) -> Result<Whitelist, WhitelistError> {
        match Whitelist::load(path, services) {
            Err(WhitelistError::Missing { .. }) => Whitelist::parse(path, String::new(), services),
            other => other,
        }
    }

    /// The whitelist in `text`, as read from `path` (named in errors).
    pub fn parse(path: &Path, text: String, services: &[String]) -> Result<Whitelist, WhitelistError> {
        let entries: Option<Vec<WhitelistEntry>> = config::parse_yaml(path, &text)?;
        let whitelist =
            Whitelist { path: path.into(), services: services.to_vec(), entries: entries.unwrap_or_default(), text };
        let lines = whitelist.entry_lines();
        let mut problems = Vec::new();
        for (index, entry) in whitelist.entries.iter().enumerate() {
            if let Err(problem) = whitelist.check(entry) {
                problems.push(match lines.get(index) {
                    Some(line) => format!("line {}: {problem}", line + 1),
                    None => format!("entry {}: {problem}", index + 1),
                });
            }
        }
        if !problems.is_empty() {
            return Err(WhitelistError::Entries { path: path.into(), problems });
        }
        Ok(whitelist)
    }

    /// What is wrong with `entry`, if anything.
    fn check(&self, entry: &WhitelistEntry) -> Result<(), String> {
        if !self.services.contains(&entry.service) {
            return Err(format!(
                "service {:?} is not a configured service ({})",
                entry.service,
                self.services.join(", ")
            ));
        }
        if entry.address.0.prefix_len() == 0 && !entry.force {
            return Err(format!(
                "{} covers every {} address: every such host would be whitelisted for {} and never reported; if \
                 that is meant, add `force: true` to the entry (--force)",
                entry.address,
                if entry.address.0.addr().is_ipv4() { "IPv4" } else { "IPv6" },
                entry.service
            ));
        }
        Ok(())
    }

    /// The index of the line where each entry starts (`- ` at the start
    /// of a line), in a file laid out as a plain list.
    fn entry_lines(&self) -> Vec<usize> {
        let lines: Vec<&str> = self.text.lines().collect();
        (0..lines.len()).filter(|&i| lines[i] == "-" || lines[i].starts_with("- ")).collect()
    }

    /// The file's text, as read or last written.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[WhitelistEntry] {
        &self.entries
    }

    /// The most specific entry covering `host` for `service`.
    pub fn matching(&self, host: IpAddr, service: &str) -> Option<&WhitelistEntry> {
        self.entries
            .iter()
            .filter(|e| e.service == service && e.address.0.contains(&host))
            .max_by_key(|e| e.address.0.prefix_len())
    }

    /// Appends an entry to the file.
    pub fn add(&mut self, entry: WhitelistEntry) -> Result<(), WhitelistError> {
        let _editing = self.begin_edit()?;
        self.check(&entry).map_err(|problem| WhitelistError::Entry {
            path: self.path.clone(),
            entry: format!("{}: ", entry.address),
            problem,
        })?;
        if self.entries.iter().any(|e| e.address == entry.address && e.service == entry.service) {
            return Err(WhitelistError::Duplicate {
                path: self.path.clone(),
                address: entry.address,
                service: entry.service,
            });
        }
        let mut text = self.text.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        if !text.trim().is_empty() && !text.ends_with("\n\n") {
            text.push('\n');
        }
        text += &config::to_yaml(&[&entry]);
        self.save(text)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Cuts the entries for `address` (and `service`, if given) out of the
    /// file; returns how many.
    pub fn remove(&mut self, address: Prefix, service: Option<&str>) -> Result<usize, WhitelistError> {
        let _editing = self.begin_edit()?;
        let doomed: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].address == address && service.is_none_or(|s| self.entries[i].service == s))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let starts = self.entry_lines();
        let mut lines: Vec<&str> = self.text.lines().collect();
        if starts.len() != self.entries.len() {
            return Err(WhitelistError::Layout {
                path: self.path.clone(),
                entries: self.entries.len(),
                items: starts.len(),
            });
        }
        for &index in doomed.iter().rev() {
            let start = starts[index];
            let mut end = starts.get(index + 1).copied().unwrap_or(lines.len());
            // Comments and blank lines before the next entry belong to it.
            while end > start + 1 && is_blank_or_comment(lines[end - 1]) {
                end -= 1;
            }
            lines.drain(start..end);
            // Do not leave two blank lines where the entry was.
            if start > 0 && start < lines.len() && lines[start - 1].trim().is_empty() && lines[start].trim().is_empty()
            {
                lines.remove(start);
            }
        }
        // Nor blank lines at the end where the last entry was.
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        self.save(text)?;
        for &index in doomed.iter().rev() {
            self.entries.remove(index);
        }
        Ok(doomed.len())
    }

    /// Replaces the file atomically (a reader never sees half of it).
    /// Takes the lock beside the file (`PATH.lock`, held until the
    /// returned file is dropped) and reads the file again under it: two
    /// editors at once (the CLI and the console, two analysts) each change
    /// the file as the other left it, and no entry is lost.
    fn begin_edit(&mut self) -> Result<std::fs::File, WhitelistError> {
        use std::os::fd::AsRawFd;
        let lock_path = PathBuf::from(format!("{}.lock", self.path.display()));
        let write_error = |source| WhitelistError::Write { path: lock_path.clone(), source };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(write_error)?;
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(write_error(std::io::Error::last_os_error()));
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) if text != self.text => *self = Whitelist::parse(&self.path, text, &self.services)?,
            Ok(_) => {}
            // Not written yet: this edit starts it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Read { path: self.path.clone(), source }.into()),
        }
        Ok(lock)
    }

    fn save(&mut self, text: String) -> Result<(), WhitelistError> {
        let write_error = |source| WhitelistError::Write { path: self.path.clone(), source };
        let temporary = self.path.with_extension("yaml.tmp");
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        std::fs::write(&temporary, &text).map_err(write_error)?;
        if let Ok(metadata) = std::fs::metadata(&self.path) {
            std::fs::set_permissions(&temporary, metadata.permissions()).map_err(write_error)?;
        }
        std::fs::rename(&temporary, &self.path).map_err(write_error)?;
        self.text = text;
        Ok(())
    }
}

fn is_blank_or_comment(line: &str) -> bool {
    let line = line.trim();
    line.is_empty() || line.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rogue-whitelist-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("whitelist.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn two_editors_at_once_each_keep_the_others_entry() {
        let path = temp("editors", "# ours\n");
        let services = ["smtp".to_string()];
        let mut first = Whitelist::load(&path, &services).unwrap();
        let mut second = Whitelist::load(&path, &services).unwrap();
        first.add(entry("192.0.2.25")).unwrap();
        second.add(entry("192.0.2.26")).unwrap();
        let after = Whitelist::load(&path, &services).unwrap();
        let addresses: Vec<String> = after.entries().iter().map(|e| e.address.to_string()).collect();
        assert_eq!(addresses, ["192.0.2.25", "192.0.2.26"], "{}", after.text());
        assert!(after.text().starts_with("# ours\n"));
        first.remove("192.0.2.26".parse().unwrap(), None).unwrap();
        assert_eq!(
            Whitelist::load(&path, &services).unwrap().entries().len(),
            1,
            "the other's entry, removed as asked"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    fn entry(address: &str) -> WhitelistEntry {
        WhitelistEntry {
            address: address.parse().unwrap(),
            service: "smtp".into(),
            name: Some("mx3.example.org".into()),
            reason: Some("new MX: ticket #42".into()),
            verified_by: Some("carol".into()),
            verified_on: Some(jiff::civil::date(2026, 11, 26)),
            force: false,
        }
    }

    fn smtp() -> Vec<String> {
        vec!["smtp".to_string()]
    }

    #[test]
    fn the_example_in_the_repository_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/whitelist.yaml");
        let whitelist = Whitelist::load(&path, &smtp()).unwrap();
        assert_eq!(whitelist.entries().len(), 2);
        assert!(whitelist.matching("192.0.2.25".parse().unwrap(), "smtp").is_some());
        assert!(whitelist.matching("192.0.2.25".parse().unwrap(), "dns").is_none());
    }

    #[test]
    fn the_most_specific_prefix_matches() {
        let path = temp("specific", "- address: 192.0.2.0/24\n  name: all\n- address: 192.0.2.25\n  name: mx\n");
        let whitelist = Whitelist::load(&path, &smtp()).unwrap();
        assert_eq!(whitelist.matching("192.0.2.25".parse().unwrap(), "smtp").unwrap().name.as_deref(), Some("mx"));
        assert_eq!(whitelist.matching("192.0.2.26".parse().unwrap(), "smtp").unwrap().name.as_deref(), Some("all"));
        assert!(whitelist.matching("198.51.100.1".parse().unwrap(), "smtp").is_none());
    }

    #[test]
    fn adding_and_removing_keep_every_other_line_and_comment() {
        let original = "# Verified servers.\n\n- address: 192.0.2.25   # the MX\n  name: mx1\n\n# The backup MX, see ticket 7.\n- address: 192.0.2.26\n  name: mx2\n";
        let path = temp("edit", original);
        let mut whitelist = Whitelist::load(&path, &smtp()).unwrap();
        whitelist.add(entry("2001:db8:10::25")).unwrap();
        let added = std::fs::read_to_string(&path).unwrap();
        assert!(added.starts_with(original), "{added}");
        assert!(added.ends_with(
            "\n- address: 2001:db8:10::25\n  service: smtp\n  name: mx3.example.org\n  reason: 'new MX: ticket #42'\n  verified_by: carol\n  verified_on: 2026-11-26\n"
        ), "{added}");
        assert_eq!(Whitelist::load(&path, &smtp()).unwrap().entries().len(), 3);

        assert_eq!(whitelist.remove("192.0.2.25".parse().unwrap(), None).unwrap(), 1);
        let removed = std::fs::read_to_string(&path).unwrap();
        assert!(
            removed.starts_with(
                "# Verified servers.\n\n# The backup MX, see ticket 7.\n- address: 192.0.2.26\n  name: mx2\n"
            ),
            "{removed}"
        );
        let reloaded = Whitelist::load(&path, &smtp()).unwrap();
        assert_eq!(
            reloaded.entries().iter().map(|e| e.address.to_string()).collect::<Vec<_>>(),
            ["192.0.2.26", "2001:db8:10::25"]
        );
        assert_eq!(whitelist.remove("198.51.100.1".parse().unwrap(), None).unwrap(), 0);
    }

    #[test]
    fn mistakes_are_refused_with_the_reason() {
        let path = temp("mistakes", "- address: 192.0.2.25\n");
        let mut whitelist = Whitelist::load(&path, &smtp()).unwrap();
        let duplicate = whitelist
            .add(WhitelistEntry { address: "192.0.2.25".parse().unwrap(), ..entry("192.0.2.25") })
            .unwrap_err();
        assert!(duplicate.to_string().ends_with("192.0.2.25 is already whitelisted for smtp"), "{duplicate}");
        assert_eq!(
            "192.0.2.1/24".parse::<Prefix>().unwrap_err(),
            "\"192.0.2.1/24\" has host bits set; did you mean 192.0.2.0/24?"
        );
        let flow_style = temp("flow", "[{address: 192.0.2.25}]\n");
        let layout =
            Whitelist::load(&flow_style, &smtp()).unwrap().remove("192.0.2.25".parse().unwrap(), None).unwrap_err();
        assert!(layout.to_string().contains("plain list of entries"), "{layout}");
        let typo = temp("typo", "- address: 192.0.2.25\n  verfied_by: alice\n");
        let error = Whitelist::load(&typo, &smtp()).err().unwrap().to_string();
        assert!(error.contains("unknown field `verfied_by`") && error.contains("line 2"), "{error}");
    }

    /// Mistakes in the file are errors naming the file, the line and the value.
    #[test]
    fn a_whitelist_that_would_hide_findings_by_mistake_is_refused_naming_the_line() {
        let absent = temp("absent", "").with_file_name("absent.yaml");
        let missing = Whitelist::load(&absent, &smtp()).err().unwrap().to_string();
        assert!(missing.starts_with(&format!("the whitelist {} does not exist", absent.display())), "{missing}");
        assert!(Whitelist::load_or_new(&absent, &smtp()).unwrap().entries().is_empty(), "add and accept start one");

        let text = "# verified\n- address: 192.0.2.25\n  name: mx1\n\n- address: 192.0.2.26\n  service: smpt\n";
        let path = temp("service", text);
        let error = Whitelist::load(&path, &smtp()).err().unwrap().to_string();
        assert_eq!(error, format!("{}: line 5: service \"smpt\" is not a configured service (smtp)", path.display()));

        for (everything, family) in [("0.0.0.0/0", "IPv4"), ("::/0", "IPv6")] {
            let path = temp("everything", &format!("- address: 192.0.2.25\n- address: \"{everything}\"\n"));
            let error = Whitelist::load(&path, &smtp()).err().unwrap().to_string();
            assert!(
                error.starts_with(&format!("{}: line 2: {everything} covers every {family} address", path.display())),
                "{error}"
            );
            let forced = temp("forced", &format!("- address: \"{everything}\"\n  force: true\n"));
            assert_eq!(Whitelist::load(&forced, &smtp()).unwrap().entries().len(), 1);
        }

        let bits = temp("bits", "- address: 192.0.2.25\n- address: 192.0.2.1/24\n");
        let error = Whitelist::load(&bits, &smtp()).err().unwrap().to_string();
        assert!(error.contains("\"192.0.2.1/24\" has host bits set; did you mean 192.0.2.0/24?"), "{error}");
        assert!(error.contains("line 2"), "{error}");

        let mut whitelist = Whitelist::load(&temp("add", ""), &smtp()).unwrap();
        let refused = whitelist.add(WhitelistEntry { service: "dns".into(), ..entry("192.0.2.9") }).unwrap_err();
        assert!(
            refused.to_string().ends_with("192.0.2.9: service \"dns\" is not a configured service (smtp)"),
            "{refused}"
        );
        assert!(whitelist.add(entry("0.0.0.0/0")).is_err());
        whitelist.add(WhitelistEntry { force: true, ..entry("0.0.0.0/0") }).unwrap();
    }
}
