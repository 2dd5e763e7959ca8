//! The ClickHouse schema, as an ordered list of migrations (migration N
//! takes the database from version N to N + 1, recorded in
//! `schema_versions`). Append; never edit a released one. Every statement
//! runs on ClickHouse 18.16 and on current releases. A migration that
//! changes a table must change `NAME_local` and `NAME` alike on a cluster.
//!
//! Traffic is partitioned by (live, day): a live source's old days are
//! dropped whole by retention, and a capture's rows, in partitions of their
//! own, stay until the capture is removed. Rows that add up are in
//! SummingMergeTree tables, merged by the server; each insert carries a
//! marker row (`marker` = its batch, `inserts` = 1) in the same part, so a
//! writer that lost the answer to an insert can ask whether it landed (see
//! `spool`), and a part inserted twice would show as a marker counting 2.
//! What changes state (sources, findings, verdicts, settings, DNS answers)
//! is in ReplacingMergeTree tables with a version, read with FINAL: one
//! current row per key.

pub const MIGRATIONS: &[&[Table]] = &[
    &[
        Table {
            name: "sources",
            columns: "(
            id           Int64,
            kind         String,                 -- capture | ipfix | live | collect
            name         String,
            content_hash String,                 -- '' for live sources
            ingested_ms  Int64,
            version      UInt64
        )",
            engine: "ReplacingMergeTree(version) ORDER BY id",
            sharding_key: "id",
        },
        // One row per source per write: what it covered and counted. A write
        // is evaluated when its (writer, batch) is in `evaluated`.
        Table {
            name: "source_writes",
            columns: "(
            live      UInt8,
            day       Date,
            source_id Int64,
            writer    String,
            batch     UInt64,
            first_ms  Nullable(Int64),
            last_ms   Nullable(Int64),
            packets   UInt64,
            flows     UInt64,
            rejected  UInt64
        )",
            engine: "ReplacingMergeTree PARTITION BY (live, day) ORDER BY (source_id, writer, batch)",
            sharding_key: "source_id",
        },
        Table {
            name: "evaluated",
            columns: "(
            live   UInt8,
            day    Date,
            writer String,
            batch  UInt64
        )",
            engine: "ReplacingMergeTree PARTITION BY (live, day) ORDER BY (writer, batch)",
            sharding_key: "batch",
        },
        Table {
            name: "host_bins",
            columns: "(
            live      UInt8,
            day       Date,
            host      String,
            bin       Int64,                     -- bin start, seconds
            source_id Int64,
            shard_key UInt64,
            marker    String,
            flows     UInt64,
            packets   UInt64,
            bytes     UInt64,
            inserts   UInt64
        )",
            engine: "SummingMergeTree((flows, packets, bytes, inserts))
      PARTITION BY (live, day) ORDER BY (host, bin, source_id, marker)",
            sharding_key: "shard_key",
        },
        // Destination ports of inbound flows (direction 0) and source ports of
        // outbound flows (direction 1), per host and bin.
        Table {
            name: "port_usage",
            columns: "(
            live      UInt8,
            day       Date,
            host      String,
            bin       Int64,
            source_id Int64,
            direction UInt8,
            proto     UInt8,
            port      UInt16,
            shard_key UInt64,
            marker    String,
            flows     UInt64,
            packets   UInt64,
            bytes     UInt64,
            inserts   UInt64
        )",
            engine: "SummingMergeTree((flows, packets, bytes, inserts))
      PARTITION BY (live, day) ORDER BY (host, bin, source_id, direction, proto, port, marker)",
            sharding_key: "shard_key",
        },
        Table {
            name: "share_bins",
            columns: "(
            live      UInt8,
            day       Date,
            service   String,
            host      String,
            bin       Int64,
            source_id Int64,
            shard_key UInt64,
            marker    String,
            flows     UInt64,
            packets   UInt64,
            bytes     UInt64,
            inserts   UInt64
        )",
            engine: "SummingMergeTree((flows, packets, bytes, inserts))
      PARTITION BY (live, day) ORDER BY (service, host, bin, source_id, marker)",
            sharding_key: "shard_key",
        },
        Table {
            name: "data_days",
            columns: "(
            live      UInt8,
            day       Date,
            source_id Int64,
            shard_key UInt64,
            marker    String,
            flows     UInt64,
            inserts   UInt64
        )",
            engine: "SummingMergeTree((flows, inserts)) PARTITION BY (live, day) ORDER BY (day, source_id, marker)",
            sharding_key: "shard_key",
        },
        // Qualifying service flows, seen from an internal host. A marker row
        // has service '' (no query of a service sees it).
        Table {
            name: "service_flows",
            columns: "(
            live          UInt8,
            day           Date,
            source_id     Int64,
            shard_key     UInt64,                -- which shard holds the row (see write)
            marker        String,
            service       String,
            host          String,
            role          String,                -- server | client
            peer          String,
            peer_internal UInt8,
            host_port     UInt16,
            peer_port     UInt16,
            outbound      UInt8,                 -- the host sent the flow
            start_ms      Int64,
            end_ms        Int64,
            packets       UInt64,
            bytes         UInt64,
            tcp_flags     UInt8,
            inserts       UInt64
        )",
            engine: "MergeTree PARTITION BY (live, day) ORDER BY (service, host, start_ms)",
            sharding_key: "shard_key",
        },
        // Every flow, with `store.clickhouse.raw_flows` (off by default), for
        // analysts: the method reads only the tables above.
        Table {
            name: "flows",
            columns: "(
            live      UInt8,
            day       Date,
            source_id Int64,
            shard_key UInt64,
            marker    String,
            src       String,
            dst       String,
            sport     UInt16,
            dport     UInt16,
            proto     UInt8,
            packets   UInt64,
            bytes     UInt64,
            start_ms  Int64,
            end_ms    Int64,
            tcp_flags UInt8,
            interface String,
            inserts   UInt64
        )",
            engine: "MergeTree PARTITION BY (live, day) ORDER BY (start_ms, src, dst)",
            sharding_key: "shard_key",
        },
        Table {
            name: "findings",
            columns: "(
            id         Int64,
            type       String,
            service    String,
            host       String,
            key        String,
            state      String,
            time_ms    Int64,
            details    String,                   -- JSON
            created_ms Int64,
            updated_ms Int64,
            ack_by     Nullable(String),
            ack_reason Nullable(String),
            ack_ms     Nullable(Int64),
            emitted    Nullable(String),
            version    UInt64
        )",
            // A finding is its (type, service, host, key), as on SQLite; its
            // id is the evaluator's number for it.
            engine: "ReplacingMergeTree(version) ORDER BY (type, service, host, key)",
            sharding_key: "cityHash64(type, service, host, key)",
        },
        Table {
            name: "verdicts",
            columns: "(
            service    String,
            host       String,
            verdict    String,
            decided_by String,
            reason     String,
            at_ms      Int64,
            deleted    UInt8,
            version    UInt64
        )",
            engine: "ReplacingMergeTree(version) ORDER BY (service, host)",
            sharding_key: "cityHash64(service, host)",
        },
        Table {
            name: "settings",
            columns: "(
            name    String,
            value   String,
            version UInt64
        )",
            engine: "ReplacingMergeTree(version) ORDER BY name",
            sharding_key: "cityHash64(name)",
        },
        Table {
            name: "dns_names",
            columns: "(
            service         String,
            host            String,
            ptr             Nullable(String),
            fcrdns          Nullable(UInt8),
            name_match      Nullable(UInt8),
            mx              Nullable(UInt8),
            mx_targets      String,              -- JSON
            mx_unconfigured UInt8,
            looked_up_ms    Int64,
            version         UInt64
        )",
            engine: "ReplacingMergeTree(version) ORDER BY (service, host)",
            sharding_key: "cityHash64(service, host)",
        },
    ],
    &[
        // The audit trail of analysts' decisions: rows are only ever added.
        Table {
            name: "actions",
            columns: "(
            at_ms      Int64,                    -- wall clock
            decided_by String,
            action     String,
            service    String,
            subject    String,                   -- host address or whitelist prefix
            finding_id Nullable(Int64),
            reason     String,
            via        String                    -- cli | web
        )",
            engine: "MergeTree ORDER BY at_ms",
            sharding_key: "at_ms",
        },
    ],
];

/// Where the versions applied are recorded (created before any migration).
pub const VERSIONS: Table = Table {
    name: "schema_versions",
    columns: "(version UInt32, applied_ms Int64)",
    engine: "MergeTree ORDER BY version",
    sharding_key: "version",
};

/// A table of rogue's: on one server, the table itself; on a cluster
/// (`store.clickhouse.cluster`), a table `NAME_local` on every server and
/// the Distributed table `NAME` over them, rows sent to shards by
/// `sharding_key` (traffic by its host: see write), so that every query
/// names `NAME` whichever the layout.
pub struct Table {
    pub name: &'static str,
    pub columns: &'static str,
    pub engine: &'static str,
    pub sharding_key: &'static str,
}

impl Table {
    /// The statements that create it in `database`, on `cluster` if given.
    pub fn create(&self, database: &str, cluster: Option<&str>) -> Vec<String> {
        let Table { name, columns, engine, sharding_key } = self;
        match cluster {
            None => vec![format!("CREATE TABLE IF NOT EXISTS {name} {columns} ENGINE = {engine}")],
            // Every server runs an ON CLUSTER statement in its default
            // database: the names say which.
            Some(cluster) => vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {database}.{name}_local ON CLUSTER {cluster} {columns} ENGINE = {engine}"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {database}.{name} ON CLUSTER {cluster} AS {database}.{name}_local \
                     ENGINE = Distributed({cluster}, {database}, {name}_local, {sharding_key})"
                ),
            ],
        }
    }
}
