//! The analyst's decisions, the same whichever door they come through (the
//! CLI or the web console): acknowledge findings, accept a host into the
//! whitelist, reject one as a confirmed rogue, add and remove whitelist
//! entries. The whitelist file stays the source of truth (edited as text,
//! its comments kept); the store carries the findings' states, the
//! verdicts, and the audit trail, one [`Action`] per decision with who,
//! when, why and through which door.
//!
//! Order, for what a crash leaves: the whitelist file is written first
//! (what an evaluation reads), then the store's changes and the audit
//! record together in one transaction, so the trail never names a decision
//! the store does not hold.

use std::net::IpAddr;

use crate::{
    detect::whitelist::{Prefix, Whitelist, WhitelistEntry, WhitelistError},
    engine::Engine,
    store::{Acknowledgement, Action, Store, StoreError, Verdict},
};

#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    #[error("there is no finding {} (`rogue findings` lists them); none was acknowledged", list(.0))]
    NoFinding(Vec<i64>),
    #[error(
        "{host} is on the whitelist as {entry} ({path}); remove that entry first (`rogue whitelist remove {entry}`)"
    )]
    Whitelisted { host: IpAddr, entry: Prefix, path: String },
    #[error("{prefix} is not in {path}")]
    NotWhitelisted { prefix: Prefix, path: String },
    #[error("{0:?} is not a configured service")]
    NoService(String),
    #[error(transparent)]
    Whitelist(#[from] WhitelistError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// Through which door a decision came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Cli,
    Web,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Cli => "cli",
            Via::Web => "web",
        }
    }
}

/// Who decides, when (wall clock, ms) and through which door.
#[derive(Clone, Debug)]
pub struct Decider {
    pub by: String,
    pub via: Via,
    pub now_ms: i64,
    /// The local date, which a whitelist entry records as verified on.
    pub today: jiff::civil::Date,
}

impl Decider {
    pub fn now(by: impl Into<String>, via: Via) -> Decider {
        let now = jiff::ZonedDateTime::now();
        Decider { by: by.into(), via, now_ms: now.timestamp().as_millisecond(), today: now.date() }
    }

    fn action(&self, action: &str, service: &str, subject: String, reason: &str) -> Action {
        Action {
            at_ms: self.now_ms,
            by: self.by.clone(),
            action: action.into(),
            service: service.into(),
            subject,
            finding: None,
            reason: reason.into(),
            via: self.via.as_str().into(),
        }
    }
}

/// Acknowledges the findings `ids`: all of them, or none if one is missing.
pub fn acknowledge(
    engine: &mut Engine,
    ids: &[i64],
    decider: &Decider,
    reason: Option<&str>,
) -> Result<(), TriageError> {
    let mut found = Vec::new();
    for &id in ids {
        found.extend(engine.store.finding(id)?);
    }
    let missing: Vec<i64> = ids.iter().copied().filter(|id| !found.iter().any(|f| f.id == *id)).collect();
    if !missing.is_empty() {
        return Err(TriageError::NoFinding(missing));
    }
    let ack = Acknowledgement { by: decider.by.clone(), reason: reason.map(String::from), at_ms: decider.now_ms };
    in_transaction(&mut *engine.store, &mut |store| {
        let missing = store.acknowledge(ids, &ack)?;
        debug_assert!(missing.is_empty(), "checked above, in the same process");
        for finding in &found {
            let mut action =
                decider.action("acknowledge", &finding.service, finding.host.to_string(), reason.unwrap_or(""));
            action.finding = Some(finding.id);
            store.record_action(&action)?;
        }
        Ok(())
    })
}

/// Whitelists `host` for `service` as verified by the decider (usually a
/// suggestion); its findings of the service become `whitelisted`. Returns
/// how many.
pub fn accept(
    engine: &mut Engine,
    host: IpAddr,
    service: &str,
    decider: &Decider,
    reason: &str,
) -> Result<usize, TriageError> {
    let known = engine.config.services.all().iter().find(|s| s.name == service).cloned();
    let known = known.ok_or_else(|| TriageError::NoService(service.into()))?;
    let report = engine.detector().host(&*engine.store, &known, host)?;
    let entry = WhitelistEntry {
        address: Prefix(host.into()),
        service: service.into(),
        name: report.and_then(|r| r.characteristics.ptr),
        reason: Some(reason.into()),
        verified_by: Some(decider.by.clone()),
        verified_on: Some(decider.today),
        force: false,
    };
    engine.whitelist.add(entry)?;
    let mut closed = 0;
    in_transaction(&mut *engine.store, &mut |store| {
        store.clear_verdict(service, host)?;
        closed = store.set_host_findings_state(service, host, "whitelisted", decider.now_ms)?;
        store.record_action(&decider.action("accept", service, host.to_string(), reason))
    })?;
    Ok(closed)
}

/// Records `host` as a confirmed rogue server of `service`: it stays
/// reported and is no longer suggested. Returns how many findings were marked.
pub fn reject(
    engine: &mut Engine,
    host: IpAddr,
    service: &str,
    decider: &Decider,
    reason: &str,
) -> Result<usize, TriageError> {
    if let Some(entry) = engine.whitelist.matching(host, service) {
        let path = engine.whitelist.path().display().to_string();
        return Err(TriageError::Whitelisted { host, entry: entry.address, path });
    }
    let verdict =
        Verdict { verdict: "rogue".into(), by: decider.by.clone(), reason: reason.into(), at_ms: decider.now_ms };
    let mut marked = 0;
    in_transaction(&mut *engine.store, &mut |store| {
        store.set_verdict(service, host, &verdict)?;
        marked = store.set_host_findings_state(service, host, "confirmed_rogue", decider.now_ms)?;
        store.record_action(&decider.action("reject", service, host.to_string(), reason))
    })?;
    Ok(marked)
}

/// Adds an entry the decider verified; the audit trail records it in
/// `store`, when there is one yet (the whitelist is often written before
/// any traffic is).
pub fn add_entry(
    whitelist: &mut Whitelist,
    store: Option<&mut dyn Store>,
    entry: WhitelistEntry,
    decider: &Decider,
) -> Result<(), TriageError> {
    let reason = entry.reason.clone().unwrap_or_default();
    let action = decider.action("whitelist_add", &entry.service, entry.address.to_string(), &reason);
    whitelist.add(entry)?;
    if let Some(store) = store {
        store.record_action(&action)?;
    }
    Ok(())
}

/// Removes the entries for `prefix` (of `service`, if given); returns how
/// many. The audit trail records it in `store`, as for [`add_entry`].
pub fn remove_entry(
    whitelist: &mut Whitelist,
    store: Option<&mut dyn Store>,
    prefix: Prefix,
    service: Option<&str>,
    decider: &Decider,
    reason: &str,
) -> Result<usize, TriageError> {
    let removed = whitelist.remove(prefix, service)?;
    if removed == 0 {
        return Err(TriageError::NotWhitelisted { prefix, path: whitelist.path().display().to_string() });
    }
    if let Some(store) = store {
        store.record_action(&decider.action("whitelist_remove", service.unwrap_or(""), prefix.to_string(), reason))?;
    }
    Ok(removed)
}

fn in_transaction(
    store: &mut dyn Store,
    f: &mut dyn FnMut(&mut dyn Store) -> Result<(), StoreError>,
) -> Result<(), TriageError> {
    Ok(store.in_transaction(f)?)
}
