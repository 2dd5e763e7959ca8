//! The schema, as an ordered list of migrations: migration N takes the store
//! from `user_version` N to N + 1. Append; never edit a released one.

pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE sources (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,              -- capture | live
        name        TEXT NOT NULL,              -- file path, or interfaces
        sha256      TEXT UNIQUE,                -- content hash of a capture (see migration 4)
        first_ms    INTEGER,                    -- data time covered
        last_ms     INTEGER,
        packets     INTEGER NOT NULL DEFAULT 0,
        flows       INTEGER NOT NULL DEFAULT 0,
        ingested_ms INTEGER NOT NULL            -- wall clock of the ingest
    );

    -- Per internal host and time bin: destination ports of inbound flows
    -- (direction 0) and source ports of outbound flows (direction 1).
    CREATE TABLE port_usage (
        host      TEXT NOT NULL,
        bin       INTEGER NOT NULL,             -- bin start, seconds
        direction INTEGER NOT NULL,
        proto     INTEGER NOT NULL,
        port      INTEGER NOT NULL,
        flows     INTEGER NOT NULL,
        packets   INTEGER NOT NULL,
        bytes     INTEGER NOT NULL,
        PRIMARY KEY (host, bin, direction, proto, port)
    ) WITHOUT ROWID;
    CREATE INDEX port_usage_bin ON port_usage (bin);

    -- All of a host's traffic per bin, both directions.
    CREATE TABLE host_bins (
        host    TEXT NOT NULL,
        bin     INTEGER NOT NULL,
        flows   INTEGER NOT NULL,
        packets INTEGER NOT NULL,
        bytes   INTEGER NOT NULL,
        PRIMARY KEY (host, bin)
    ) WITHOUT ROWID;
    CREATE INDEX host_bins_bin ON host_bins (bin);

    -- A host's traffic per bin on a service's share ports (mail ports).
    CREATE TABLE share_bins (
        service TEXT NOT NULL,
        host    TEXT NOT NULL,
        bin     INTEGER NOT NULL,
        flows   INTEGER NOT NULL,
        packets INTEGER NOT NULL,
        bytes   INTEGER NOT NULL,
        PRIMARY KEY (service, host, bin)
    ) WITHOUT ROWID;
    CREATE INDEX share_bins_bin ON share_bins (bin);

    -- Qualifying service flows (SMTP flows), seen from an internal host.
    CREATE TABLE service_flows (
        id            INTEGER PRIMARY KEY,
        source_id     INTEGER NOT NULL REFERENCES sources (id),
        service       TEXT NOT NULL,
        host          TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('server', 'client')),
        peer          TEXT NOT NULL,
        peer_internal INTEGER NOT NULL,
        host_port     INTEGER NOT NULL,
        peer_port     INTEGER NOT NULL,
        outbound      INTEGER NOT NULL,         -- the host sent the flow
        start_ms      INTEGER NOT NULL,
        end_ms        INTEGER NOT NULL,
        packets       INTEGER NOT NULL,
        bytes         INTEGER NOT NULL,
        tcp_flags     INTEGER NOT NULL
    );
    CREATE INDEX service_flows_host ON service_flows (service, host, start_ms);
    CREATE INDEX service_flows_start ON service_flows (start_ms);

    -- Days (since the epoch) on which some internal host had traffic: the
    -- days the store has data for, against which baselines are measured.
    CREATE TABLE data_days (
        day   INTEGER PRIMARY KEY,
        flows INTEGER NOT NULL
    );

    -- External and internal peers per host, with the host's role.
    CREATE VIEW service_peers AS
        SELECT service, host, peer, peer_internal, role, count(*) AS flows, sum(packets) AS packets,
               sum(bytes) AS bytes, min(start_ms) AS first_ms, max(end_ms) AS last_ms
        FROM service_flows GROUP BY service, host, peer, role;

    -- Per-day server activity.
    CREATE VIEW server_days AS
        SELECT service, host, start_ms / 86400000 AS day, count(*) AS flows, sum(bytes) AS bytes
        FROM service_flows WHERE role = 'server' GROUP BY service, host, day;

    CREATE TABLE findings (
        id         INTEGER PRIMARY KEY,
        type       TEXT NOT NULL,
        service    TEXT NOT NULL,
        host       TEXT NOT NULL,
        key        TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'whitelisted', 'confirmed_rogue')),
        time_ms    INTEGER NOT NULL,            -- data time of the activity
        details    TEXT NOT NULL,               -- JSON
        created_ms INTEGER NOT NULL,            -- wall clock
        updated_ms INTEGER NOT NULL,
        UNIQUE (type, service, host, key)
    );

    -- What administrators decided about a host (rogue whitelist reject).
    CREATE TABLE verdicts (
        service TEXT NOT NULL,
        host    TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('rogue')),
        by      TEXT NOT NULL,
        reason  TEXT NOT NULL,
        at_ms   INTEGER NOT NULL,
        PRIMARY KEY (service, host)
    );
    ",
    // 2: what the agent last emitted of each finding, so a restart re-emits
    // nothing (see detect::material_evidence).
    "ALTER TABLE findings ADD COLUMN emitted TEXT;",
    // 3: port_usage loses its index on bin: maintaining it cost as much as
    // the table itself on every write, and only pruning used it (now by
    // host, along the primary key).
    "DROP INDEX port_usage_bin;",
    // 4: captures are hashed with BLAKE3 (several times faster than SHA-256
    // on the same core); hashes say their algorithm, and the SHA-256 ones
    // stored before stay, so those captures are still refused a second time.
    "ALTER TABLE sources RENAME COLUMN sha256 TO content_hash;
     UPDATE sources SET content_hash = 'sha256:' || content_hash WHERE content_hash IS NOT NULL;",
    // 5: every row of traffic names its source, so that retention and
    // removal touch one source's data and no other's (a capture of 2008
    // beside an agent's live data; see store::retention). Rows stored before
    // have no source and are kept under one source of kind 'migrated'.
    // Sources say what of them no evaluation has covered yet (from
    // pending_from_ms, written by write number pending_seq), so an
    // evaluation cut short is finished by the next; and how many of their
    // records were rejected as dated outside the plausible window. What DNS
    // answered is kept, so the query commands show it without asking again.
    "
    INSERT INTO sources (kind, name, first_ms, last_ms, ingested_ms)
        SELECT 'migrated', 'traffic stored before schema version 5', min(bin) * 1000, max(bin) * 1000,
               CAST(unixepoch('subsec') * 1000 AS INTEGER)
        FROM host_bins HAVING count(*) > 0;

    CREATE TABLE port_usage_5 (
        host      TEXT NOT NULL,
        bin       INTEGER NOT NULL,
        direction INTEGER NOT NULL,
        proto     INTEGER NOT NULL,
        port      INTEGER NOT NULL,
        source_id INTEGER NOT NULL,
        flows     INTEGER NOT NULL,
        packets   INTEGER NOT NULL,
        bytes     INTEGER NOT NULL,
        PRIMARY KEY (host, bin, direction, proto, port, source_id)
    ) WITHOUT ROWID;
    INSERT INTO port_usage_5 SELECT host, bin, direction, proto, port,
        (SELECT max(id) FROM sources WHERE kind = 'migrated'), flows, packets, bytes FROM port_usage;
    DROP TABLE port_usage;
    ALTER TABLE port_usage_5 RENAME TO port_usage;

    CREATE TABLE host_bins_5 (
        host      TEXT NOT NULL,
        bin       INTEGER NOT NULL,
        source_id INTEGER NOT NULL,
        flows     INTEGER NOT NULL,
        packets   INTEGER NOT NULL,
        bytes     INTEGER NOT NULL,
        PRIMARY KEY (host, bin, source_id)
    ) WITHOUT ROWID;
    INSERT INTO host_bins_5 SELECT host, bin, (SELECT max(id) FROM sources WHERE kind = 'migrated'),
        flows, packets, bytes FROM host_bins;
    DROP TABLE host_bins;
    ALTER TABLE host_bins_5 RENAME TO host_bins;
    CREATE INDEX host_bins_bin ON host_bins (bin);

    CREATE TABLE share_bins_5 (
        service   TEXT NOT NULL,
        host      TEXT NOT NULL,
        bin       INTEGER NOT NULL,
        source_id INTEGER NOT NULL,
        flows     INTEGER NOT NULL,
        packets   INTEGER NOT NULL,
        bytes     INTEGER NOT NULL,
        PRIMARY KEY (service, host, bin, source_id)
    ) WITHOUT ROWID;
    INSERT INTO share_bins_5 SELECT service, host, bin, (SELECT max(id) FROM sources WHERE kind = 'migrated'),
        flows, packets, bytes FROM share_bins;
    DROP TABLE share_bins;
    ALTER TABLE share_bins_5 RENAME TO share_bins;
    CREATE INDEX share_bins_bin ON share_bins (bin);

    CREATE TABLE data_days_5 (
        day       INTEGER NOT NULL,
        source_id INTEGER NOT NULL,
        flows     INTEGER NOT NULL,
        PRIMARY KEY (day, source_id)
    ) WITHOUT ROWID;
    INSERT INTO data_days_5 SELECT day, (SELECT max(id) FROM sources WHERE kind = 'migrated'), flows FROM data_days;
    DROP TABLE data_days;
    ALTER TABLE data_days_5 RENAME TO data_days;

    -- Live origins (interfaces, exporters) find their source by name.
    CREATE INDEX sources_name ON sources (kind, name);
    ALTER TABLE sources ADD COLUMN pending_from_ms INTEGER;
    ALTER TABLE sources ADD COLUMN pending_seq INTEGER;
    ALTER TABLE sources ADD COLUMN rejected INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE write_sequence (value INTEGER NOT NULL);
    INSERT INTO write_sequence VALUES (0);

    CREATE TABLE dns_names (
        service         TEXT NOT NULL,
        host            TEXT NOT NULL,
        ptr             TEXT,                -- escaped (dns::display_name)
        fcrdns          INTEGER,             -- NULL: no answer
        name_match      INTEGER,
        mx              INTEGER,
        mx_targets      TEXT NOT NULL,       -- JSON
        mx_unconfigured INTEGER NOT NULL,
        looked_up_ms    INTEGER NOT NULL,    -- wall clock
        PRIMARY KEY (service, host)
    );
    ",
    // 6: the configuration and whitelist the store was last evaluated
    // with, so that `--db PATH` alone answers the query commands as the
    // machine that wrote the store would (see Store::recorded_settings).
    "CREATE TABLE settings (
        name  TEXT PRIMARY KEY,   -- config_path, config_text, config_dir, data_dir, whitelist_path, whitelist_text
        value TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 7: who acknowledged a finding, why and when (`rogue findings ack ID
    // --by NAME --reason TEXT`).
    "ALTER TABLE findings ADD COLUMN ack_by TEXT;
     ALTER TABLE findings ADD COLUMN ack_reason TEXT;
     ALTER TABLE findings ADD COLUMN ack_ms INTEGER;",
    // 8: a host's port usage in a bin is packed into its host_bins row
    // (store::ports), one row where port_usage had one per port: those rows
    // were a third of the time of storing profiles. A port_usage row always
    // came with the host_bins row of its host, bin and source; should one
    // be missing, it is made (counting nothing) so no port usage is lost.
    "ALTER TABLE host_bins ADD COLUMN ports BLOB;
     INSERT INTO host_bins (host, bin, source_id, flows, packets, bytes)
         SELECT DISTINCT host, bin, source_id, 0, 0, 0 FROM port_usage AS p
         WHERE NOT EXISTS (SELECT 1 FROM host_bins AS h
                           WHERE h.host = p.host AND h.bin = p.bin AND h.source_id = p.source_id);
     UPDATE host_bins SET ports = (
         SELECT rogue_pack_ports(direction, proto, port, flows, packets, bytes) FROM port_usage AS p
         WHERE p.host = host_bins.host AND p.bin = host_bins.bin AND p.source_id = host_bins.source_id);
     DROP TABLE port_usage;",
    // 9: the audit trail of analysts' decisions (acknowledge, accept,
    // reject, whitelist add and remove), from the CLI and the web console.
    "CREATE TABLE actions (
        id         INTEGER PRIMARY KEY,
        at_ms      INTEGER NOT NULL,    -- wall clock
        by         TEXT NOT NULL,
        action     TEXT NOT NULL,
        service    TEXT NOT NULL,
        subject    TEXT NOT NULL,       -- host address or whitelist prefix
        finding_id INTEGER,
        reason     TEXT NOT NULL,
        via        TEXT NOT NULL        -- cli | web
    );",
];
