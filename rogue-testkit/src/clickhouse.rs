//! A real ClickHouse server for tests (Debian's clickhouse-server, 18.16):
//! on free loopback ports, its data in a directory of its own, stopped and
//! removed on drop; it can be killed and started again (an outage). And a
//! cluster of them: servers that are each a shard, coordinated by a real
//! ZooKeeper (Debian's), which ON CLUSTER statements need.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::require;

pub struct ClickHouse {
    /// The HTTP interface's port (rogue's `store.clickhouse.url`).
    pub http_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl ClickHouse {
    pub fn start(name: &str) -> ClickHouse {
        ClickHouse::configured(name, crate::free_port(), crate::free_port(), "")
    }

    /// The servers of `cluster`, one shard each, coordinated by `zookeeper`.
    pub fn cluster(name: &str, cluster: &str, shards: usize, zookeeper: &ZooKeeper) -> Vec<ClickHouse> {
        let ports: Vec<(u16, u16)> = (0..shards).map(|_| (crate::free_port(), crate::free_port())).collect();
        let replicas: String = ports
            .iter()
            .map(|(_, tcp)| format!("<shard><replica><host>127.0.0.1</host><port>{tcp}</port></replica></shard>"))
            .collect();
        let extra = format!(
            "<remote_servers><{cluster}>{replicas}</{cluster}></remote_servers>\n  \
             <zookeeper><node><host>127.0.0.1</host><port>{}</port></node></zookeeper>\n  \
             <distributed_ddl><path>/clickhouse/{name}/ddl</path></distributed_ddl>",
            zookeeper.port
        );
        ports
            .iter()
            .enumerate()
            .map(|(shard, &(http, tcp))| ClickHouse::configured(&format!("{name}-{shard}"), http, tcp, &extra))
            .collect()
    }

    /// A server on the ports given, `extra` XML in its configuration.
    fn configured(name: &str, http_port: u16, tcp_port: u16, extra: &str) -> ClickHouse {
        require("clickhouse-server");
        let dir = std::env::temp_dir().join(format!("rogue-clickhouse-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                "<yandex>\n  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>\n  \
                 <http_port>{http_port}</http_port>\n  <tcp_port>{tcp_port}</tcp_port>\n  <listen_host>127.0.0.1</listen_host>\n  \
                 <path>{d}/data/</path>\n  <tmp_path>{d}/tmp/</tmp_path>\n  <user_files_path>{d}/user_files/</user_files_path>\n  \
                 <format_schema_path>{d}/format_schemas/</format_schema_path>\n  <users_config>users.xml</users_config>\n  \
                 <default_profile>default</default_profile>\n  <default_database>default</default_database>\n  \
                 <mark_cache_size>67108864</mark_cache_size>\n  {extra}\n</yandex>\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("users.xml"),
            "<yandex>\n  <profiles><default></default></profiles>\n  <users>\n    <default><password></password>\
             <networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>\n    \
             <rogue><password>s3cret</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile>\
             <quota>default</quota></rogue>\n  </users>\n  <quotas><default></default></quotas>\n</yandex>\n",
        )
        .unwrap();
        let mut server = ClickHouse { http_port, dir, child: None };
        server.resume();
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server (again) on its data, and waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the server runs");
        let child = Command::new("clickhouse-server")
            .arg(format!("--config-file={}", self.dir.join("config.xml").display()))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.query("SELECT 1").is_ok_and(|answer| answer.trim() == "1") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        panic!("clickhouse-server did not answer on port {} within 30 s:\n{log}", self.http_port);
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `sql` as the default user; the server's answer, or its error.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        match agent.post(&format!("{}/", self.url())).send_string(sql) {
            Ok(response) => response.into_string().map_err(|e| e.to_string()),
            Err(ureq::Error::Status(code, response)) => {
                Err(format!("HTTP {code}: {}", response.into_string().unwrap_or_default()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// A query's answer, which must come.
    pub fn answer(&self, sql: &str) -> String {
        self.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).trim().to_string()
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A ZooKeeper server (Debian's zookeeper) on a free loopback port, its
/// data in a directory of its own, stopped and removed on drop.
pub struct ZooKeeper {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl ZooKeeper {
    pub fn start(name: &str) -> ZooKeeper {
        const SERVER: &str = "/usr/share/zookeeper/bin/zkServer.sh";
        assert!(
            std::path::Path::new(SERVER).exists(),
            "ZooKeeper is not installed; `cargo xtask setup` installs the test tools (apt-get install zookeeper)"
        );
        let dir = std::env::temp_dir().join(format!("rogue-zookeeper-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = crate::free_port();
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={}/data\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=ruok\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new(SERVER)
            .arg("start-foreground")
            .arg(dir.join("zoo.cfg"))
            .env("ZOO_LOG_DIR", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let zookeeper = ZooKeeper { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !zookeeper.is_ok() {
            assert!(Instant::now() < deadline, "ZooKeeper did not answer on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        zookeeper
    }

    /// ZooKeeper's own health check: "ruok", answered "imok".
    fn is_ok(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = crate::connect_local(self.port, Duration::from_secs(5)) else { return false };
        let mut answer = String::new();
        stream.write_all(b"ruok").is_ok() && stream.read_to_string(&mut answer).is_ok() && answer == "imok"
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
