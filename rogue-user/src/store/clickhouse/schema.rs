//! The ClickHouse schema, as an ordered list of migrations (migration N
//! takes the database from version N to N + 1, recorded in
//! `schema_versions`). Append; never edit a released one. Every statement
//! runs on ClickHouse 18.16 and on current releases.
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

pub const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE IF NOT EXISTS sources (
        id           Int64,
        kind         String,                 -- capture | ipfix | live | collect
        name         String,
        content_hash String,                 -- '' for live sources
        ingested_ms  Int64,
        version      UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY id",
    // One row per source per write: what it covered and counted. A write
    // is evaluated when its (writer, batch) is in `evaluated`.
    "CREATE TABLE IF NOT EXISTS source_writes (
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
    ) ENGINE = ReplacingMergeTree PARTITION BY (live, day) ORDER BY (source_id, writer, batch)",
    "CREATE TABLE IF NOT EXISTS evaluated (
        live   UInt8,
        day    Date,
        writer String,
        batch  UInt64
    ) ENGINE = ReplacingMergeTree PARTITION BY (live, day) ORDER BY (writer, batch)",
    "CREATE TABLE IF NOT EXISTS host_bins (
        live      UInt8,
        day       Date,
        host      String,
        bin       Int64,                     -- bin start, seconds
        source_id Int64,
        marker    String,
        flows     UInt64,
        packets   UInt64,
        bytes     UInt64,
        inserts   UInt64
    ) ENGINE = SummingMergeTree((flows, packets, bytes, inserts))
      PARTITION BY (live, day) ORDER BY (host, bin, source_id, marker)",
    // Destination ports of inbound flows (direction 0) and source ports of
    // outbound flows (direction 1), per host and bin.
    "CREATE TABLE IF NOT EXISTS port_usage (
        live      UInt8,
        day       Date,
        host      String,
        bin       Int64,
        source_id Int64,
        direction UInt8,
        proto     UInt8,
        port      UInt16,
        marker    String,
        flows     UInt64,
        packets   UInt64,
        bytes     UInt64,
        inserts   UInt64
    ) ENGINE = SummingMergeTree((flows, packets, bytes, inserts))
      PARTITION BY (live, day) ORDER BY (host, bin, source_id, direction, proto, port, marker)",
    "CREATE TABLE IF NOT EXISTS share_bins (
        live      UInt8,
        day       Date,
        service   String,
        host      String,
        bin       Int64,
        source_id Int64,
        marker    String,
        flows     UInt64,
        packets   UInt64,
        bytes     UInt64,
        inserts   UInt64
    ) ENGINE = SummingMergeTree((flows, packets, bytes, inserts))
      PARTITION BY (live, day) ORDER BY (service, host, bin, source_id, marker)",
    "CREATE TABLE IF NOT EXISTS data_days (
        live      UInt8,
        day       Date,
        source_id Int64,
        marker    String,
        flows     UInt64,
        inserts   UInt64
    ) ENGINE = SummingMergeTree((flows, inserts)) PARTITION BY (live, day) ORDER BY (day, source_id, marker)",
    // Qualifying service flows, seen from an internal host. A marker row
    // has service '' (no query of a service sees it).
    "CREATE TABLE IF NOT EXISTS service_flows (
        live          UInt8,
        day           Date,
        source_id     Int64,
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
    ) ENGINE = MergeTree PARTITION BY (live, day) ORDER BY (service, host, start_ms)",
    "CREATE TABLE IF NOT EXISTS findings (
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
    ) ENGINE = ReplacingMergeTree(version) ORDER BY id",
    "CREATE TABLE IF NOT EXISTS verdicts (
        service    String,
        host       String,
        verdict    String,
        decided_by String,
        reason     String,
        at_ms      Int64,
        deleted    UInt8,
        version    UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (service, host)",
    "CREATE TABLE IF NOT EXISTS settings (
        name    String,
        value   String,
        version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY name",
    "CREATE TABLE IF NOT EXISTS dns_names (
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
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (service, host)",
]];

/// Where the versions applied are recorded.
pub const VERSIONS: &str =
    "CREATE TABLE IF NOT EXISTS schema_versions (version UInt32, applied_ms Int64) ENGINE = MergeTree ORDER BY version";
