//! What the method asks of the store: hosts' activity, roles, days, shares,
//! peers and port usage in a window, summed over every source; and the
//! sources themselves.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, addr, ports};
use crate::{
    profile::Role,
    store::{HostActivity, LIVE_SQL, Peer, Pending, PortUsageRow, Result, Source, StoreError, Traffic},
    time::MILLIS_PER_DAY,
};

impl Traffic for SqliteStore {
    fn has_sha256_hashes(&self) -> Result<bool> {
        let query = "SELECT EXISTS (SELECT 1 FROM sources WHERE content_hash LIKE 'sha256:%')";
        self.run(|c| c.query_row(query, [], |row| row.get(0)))
    }

    fn sources(&self) -> Result<Vec<Source>> {
        self.run(|c| {
            let mut statement = c.prepare(&format!("{SOURCES} ORDER BY id"))?;
            let rows = statement.query_map([], source_row)?;
            rows.collect()
        })
    }

    fn source(&self, id: i64) -> Result<Option<Source>> {
        self.run(|c| c.query_row(&format!("{SOURCES} WHERE id = ?"), [id], source_row).optional())
    }

    fn source_by_hash(&self, hash: &str) -> Result<Option<Source>> {
        self.run(|c| c.query_row(&format!("{SOURCES} WHERE content_hash = ?"), [hash], source_row).optional())
    }

    fn pending_files(&self) -> Result<Option<(i64, i64)>> {
        self.run(|c| {
            c.query_row(
                &format!("SELECT min(pending_from_ms), max(last_ms) FROM sources WHERE pending_from_ms IS NOT NULL AND NOT {LIVE_SQL}"),
                [],
                |row| Ok(row.get::<_, Option<i64>>(0)?.zip(row.get::<_, Option<i64>>(1)?)),
            )
        })
    }

    fn newest_ms(&self) -> Result<Option<i64>> {
        self.run(|c| c.query_row("SELECT max(last_ms) FROM sources", [], |row| row.get(0)))
    }

    fn pending(&self) -> Result<Option<Pending>> {
        self.run(|c| {
            let (from, to): (Option<i64>, Option<i64>) = c.query_row(
                "SELECT min(pending_from_ms), max(last_ms) FROM sources WHERE pending_from_ms IS NOT NULL",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let seq = c.query_row("SELECT value FROM write_sequence", [], |row| row.get(0))?;
            Ok(from.zip(to).map(|(from_ms, to_ms)| Pending { from_ms, to_ms, seq }))
        })
    }

    fn write_seq(&self) -> Result<i64> {
        self.run(|c| c.query_row("SELECT value FROM write_sequence", [], |row| row.get(0)))
    }

    fn covered_days(&self) -> Result<BTreeSet<i64>> {
        self.run(|c| {
            let mut statement = c.prepare_cached("SELECT DISTINCT day FROM data_days")?;
            let days = statement.query_map([], |row| row.get(0))?;
            days.collect()
        })
    }

    fn service_host_addresses(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<IpAddr>> {
        self.run(|c| {
            let mut statement = c.prepare_cached(
                "SELECT DISTINCT host FROM service_flows WHERE service = ? AND start_ms BETWEEN ? AND ? ORDER BY host",
            )?;
            let rows = statement.query_map(params![service, from_ms, to_ms], |row| addr(row, 0))?;
            rows.collect()
        })
    }

    fn service_host_last_ms(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Option<i64>> {
        self.run(|c| {
            c.prepare_cached(
                "SELECT max(end_ms) FROM service_flows WHERE service = ? AND host = ? AND start_ms BETWEEN ? AND ?",
            )?
            .query_row(params![service, host.to_string(), from_ms, to_ms], |row| row.get(0))
        })
    }

    fn service_host_first_ms(&self, service: &str, host: IpAddr) -> Result<Option<i64>> {
        self.run(|c| {
            c.prepare_cached("SELECT min(start_ms) FROM service_flows WHERE service = ? AND host = ?")?
                .query_row(params![service, host.to_string()], |row| row.get(0))
        })
    }

    fn service_host(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Option<HostActivity>> {
        // A statement of its own: one that also served every host could
        // not use the index on the host.
        let sql = format!("{HOST_ACTIVITY} AND host = ?4 GROUP BY host");
        let host = host.to_string();
        Ok(self.host_activities(&sql, params![service, from_ms, to_ms, host])?.pop())
    }

    fn service_hosts(&self, service: &str, from_ms: i64, to_ms: i64) -> Result<Vec<HostActivity>> {
        let sql = format!("{HOST_ACTIVITY} GROUP BY host ORDER BY host");
        self.host_activities(&sql, params![service, from_ms, to_ms])
    }

    fn server_days(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<u64> {
        self.run(|c| {
            c.prepare_cached(
                "SELECT count(DISTINCT start_ms / 86400000) FROM service_flows
                 WHERE service = ? AND host = ? AND role = 'server' AND start_ms BETWEEN ? AND ?",
            )?
            .query_row(params![service, host.to_string(), from_ms, to_ms], |row| row.get(0))
        })
    }

    fn share_bytes(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<(u64, u64)> {
        let host = host.to_string();
        let (from, to) = (from_ms.div_euclid(1000), to_ms.div_euclid(1000));
        self.run(|c| {
            let share = c
                .prepare_cached(
                    "SELECT coalesce(sum(bytes), 0) FROM share_bins WHERE service = ? AND host = ? AND bin BETWEEN ? AND ?",
                )?
                .query_row(params![service, host, from, to], |row| row.get(0))?;
            let total = c
                .prepare_cached("SELECT coalesce(sum(bytes), 0) FROM host_bins WHERE host = ? AND bin BETWEEN ? AND ?")?
                .query_row(params![host, from, to], |row| row.get(0))?;
            Ok((share, total))
        })
    }

    fn daily_volumes(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u64, u64)>> {
        // Summed here: GROUP BY would sort every flow first (a busy MX has
        // hundreds of thousands), a map of days does not.
        let mut days: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        self.each_service_flow("start_ms, bytes", service, host, from_ms, to_ms, |row| {
            let day = row.get::<_, i64>(0)?.div_euclid(MILLIS_PER_DAY);
            let counts = days.entry(day).or_default();
            counts.0 += 1;
            counts.1 += row.get::<_, u64>(1)?;
            Ok(())
        })
        .map_err(|e| self.error(e))?;
        Ok(days.into_iter().map(|(day, (flows, bytes))| (day, flows, bytes)).collect())
    }

    fn opened_to_external_servers(
        &self,
        service: &str,
        host: IpAddr,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, IpAddr)>> {
        self.run(|c| {
            let mut statement = c.prepare_cached(
                "SELECT start_ms, peer FROM service_flows
                 WHERE service = ? AND host = ? AND role = 'client' AND outbound AND NOT peer_internal
                   AND start_ms BETWEEN ? AND ? ORDER BY start_ms",
            )?;
            let rows = statement.query_map(params![service, host.to_string(), from_ms, to_ms], |row| {
                Ok((row.get(0)?, addr(row, 1)?))
            })?;
            rows.collect()
        })
    }

    fn peers(&self, service: &str, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<Peer>> {
        Ok(self.peers_and_days(service, host, from_ms, to_ms)?.0)
    }

    fn peers_and_days(
        &self,
        service: &str,
        host: IpAddr,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<Peer>, Vec<(i64, u64, u64)>)> {
        // One pass over the flows, summed in maps as daily_volumes; each
        // peer's text is allocated once, not per flow.
        #[derive(Default)]
        struct Sums {
            internal: bool,
            flows: u64,
            packets: u64,
            bytes: u64,
            first_ms: i64,
            last_ms: i64,
        }
        let mut by_peer: HashMap<String, [Option<Sums>; 2]> = HashMap::new();
        let mut days: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        let columns = "peer, peer_internal, role, packets, bytes, start_ms, end_ms";
        self.each_service_flow(columns, service, host, from_ms, to_ms, |row| {
            let peer = row.get_ref(0)?.as_str()?;
            let role = usize::from(row.get_ref(2)?.as_str()? == "server");
            let roles = match by_peer.get_mut(peer) {
                Some(roles) => roles,
                None => by_peer.entry(peer.to_string()).or_default(),
            };
            let sums =
                roles[role].get_or_insert_with(|| Sums { first_ms: i64::MAX, last_ms: i64::MIN, ..Sums::default() });
            let (bytes, start_ms): (u64, i64) = (row.get(4)?, row.get(5)?);
            sums.internal = row.get(1)?;
            sums.flows += 1;
            sums.packets += row.get::<_, u64>(3)?;
            sums.bytes += bytes;
            sums.first_ms = sums.first_ms.min(start_ms);
            sums.last_ms = sums.last_ms.max(row.get(6)?);
            let day = days.entry(start_ms.div_euclid(MILLIS_PER_DAY)).or_default();
            day.0 += 1;
            day.1 += bytes;
            Ok(())
        })
        .map_err(|e| self.error(e))?;
        let mut peers = Vec::new();
        for (text, roles) in by_peer {
            let peer: IpAddr = text.parse().map_err(|e| {
                self.error(rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
            })?;
            for (role, sums) in [Role::Client, Role::Server].into_iter().zip(roles) {
                let Some(s) = sums else { continue };
                let entry = Peer {
                    peer,
                    internal: s.internal,
                    role,
                    flows: s.flows,
                    packets: s.packets,
                    bytes: s.bytes,
                    first_ms: s.first_ms,
                    last_ms: s.last_ms,
                };
                peers.push((text.clone(), entry));
            }
        }
        // As SQL ordered them: by bytes, then the address as text, then the role.
        peers.sort_by(|(a_text, a), (b_text, b)| {
            b.bytes.cmp(&a.bytes).then_with(|| a_text.cmp(b_text)).then_with(|| a.role.as_str().cmp(b.role.as_str()))
        });
        let days = days.into_iter().map(|(day, (flows, bytes))| (day, flows, bytes)).collect();
        Ok((peers.into_iter().map(|(_, peer)| peer).collect(), days))
    }

    fn host_span(&self, host: IpAddr) -> Result<Option<(i64, i64)>> {
        self.run(|c| {
            c.query_row("SELECT min(bin), max(bin) FROM host_bins WHERE host = ?", [host.to_string()], |row| {
                Ok(row.get::<_, Option<i64>>(0)?.zip(row.get::<_, Option<i64>>(1)?))
            })
        })
    }

    fn host_daily(&self, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u64, u64)>> {
        self.run(|c| {
            let mut statement = c.prepare(
                "SELECT bin / 86400 AS day, sum(flows), sum(bytes) FROM host_bins
                 WHERE host = ? AND bin BETWEEN ? AND ? GROUP BY day ORDER BY day",
            )?;
            let rows = statement
                .query_map(params![host.to_string(), from_ms.div_euclid(1000), to_ms.div_euclid(1000)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            rows.collect()
        })
    }

    fn active_hosts(&self, from_ms: i64, to_ms: i64) -> Result<Vec<IpAddr>> {
        self.run(|c| {
            let mut statement =
                c.prepare("SELECT DISTINCT host FROM host_bins WHERE bin BETWEEN ? AND ? ORDER BY host")?;
            let rows =
                statement.query_map(params![from_ms.div_euclid(1000), to_ms.div_euclid(1000)], |row| addr(row, 0))?;
            rows.collect()
        })
    }

    fn port_usage(&self, host: IpAddr, from_ms: i64, to_ms: i64) -> Result<Vec<PortUsageRow>> {
        let packed: Vec<(i64, Option<Vec<u8>>)> = self.run(|c| {
            let mut statement = c.prepare("SELECT bin, ports FROM host_bins WHERE host = ? AND bin BETWEEN ? AND ?")?;
            let rows = statement
                .query_map(params![host.to_string(), from_ms.div_euclid(1000), to_ms.div_euclid(1000)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            rows.collect()
        })?;
        let mut usage: BTreeMap<(i64, ports::PortKey), [u64; 3]> = BTreeMap::new();
        for (bin, packed) in packed {
            let entries = ports::unpack(packed.as_deref().unwrap_or_default()).ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("the port usage of {host} in the bin at {bin} s is not a packing"),
            })?;
            for (key, counts) in entries {
                let total = usage.entry((bin, key)).or_default();
                for (sum, count) in total.iter_mut().zip(counts) {
                    *sum += count;
                }
            }
        }
        let rows = usage.into_iter().map(|((bin, (direction, proto, port)), [flows, packets, bytes])| {
            (bin, direction, proto, port, flows, packets, bytes)
        });
        Ok(rows.collect())
    }
}

impl SqliteStore {
    fn host_activities(&self, sql: &str, parameters: &[&dyn rusqlite::ToSql]) -> Result<Vec<HostActivity>> {
        self.run(|c| {
            let mut statement = c.prepare_cached(sql)?;
            let rows = statement.query_map(parameters, |row| {
                let roles: String = row.get(1)?;
                Ok(HostActivity {
                    host: addr(row, 0)?,
                    roles: roles.split(',').filter_map(Role::parse).collect(),
                    flows: row.get(2)?,
                    packets: row.get(3)?,
                    bytes: row.get(4)?,
                    first_ms: row.get(5)?,
                    last_ms: row.get(6)?,
                    external_clients: row.get(7)?,
                    external_servers: row.get(8)?,
                })
            })?;
            rows.collect()
        })
    }
}

impl SqliteStore {
    /// Calls `each` with the `columns` of every qualifying flow of
    /// `service` by `host` starting between `from_ms` and `to_ms`.
    fn each_service_flow(
        &self,
        columns: &str,
        service: &str,
        host: IpAddr,
        from_ms: i64,
        to_ms: i64,
        mut each: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {columns} FROM service_flows WHERE service = ? AND host = ? AND start_ms BETWEEN ? AND ?"
        ))?;
        let mut rows = statement.query(params![service, host.to_string(), from_ms, to_ms])?;
        while let Some(row) = rows.next()? {
            each(row)?;
        }
        Ok(())
    }
}

/// Hosts' activity from their qualifying flows of service ?1 starting
/// between ?2 and ?3 (ms), to be grouped by host.
const HOST_ACTIVITY: &str =
    "SELECT host, group_concat(DISTINCT role), count(*), sum(packets), sum(bytes), min(start_ms), max(end_ms),
            count(DISTINCT CASE WHEN role = 'server' AND NOT peer_internal THEN peer END),
            count(DISTINCT CASE WHEN role = 'client' AND NOT peer_internal THEN peer END)
     FROM service_flows WHERE service = ?1 AND start_ms BETWEEN ?2 AND ?3";

pub(super) const SOURCES: &str = "SELECT id, kind, name, content_hash, first_ms, last_ms, packets, flows, ingested_ms,
            pending_from_ms, rejected FROM sources";

pub(super) fn source_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Source> {
    Ok(Source {
        id: row.get(0)?,
        kind: row.get(1)?,
        name: row.get(2)?,
        content_hash: row.get(3)?,
        first_ms: row.get(4)?,
        last_ms: row.get(5)?,
        packets: row.get(6)?,
        flows: row.get(7)?,
        ingested_ms: row.get(8)?,
        pending_from_ms: row.get(9)?,
        rejected: row.get(10)?,
    })
}
