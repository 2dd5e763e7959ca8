//! `rogue serve`: the web console over the store, and the password hashes
//! its users file holds.

use std::{io::BufRead, net::SocketAddr, process::ExitCode, sync::Arc};

use anyhow::{Context as _, bail};
use clap::Args;

use super::context::ConfigArgs;
use crate::{
    config::{self, Config},
    serve::{self, Console, auth},
};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    rogue serve --config rogue.yaml                    (then open http://127.0.0.1:9926/)\n  \
    rogue serve --hash-password < password.txt\n\n\
    Read-only unless serve.allow_actions is true, which needs serve.users_file (a YAML list of \
    {name, password_hash}); any address but loopback needs it too. Runs until SIGINT or SIGTERM. \
    `serve.with_agent: true` serves the same console from `rogue agent` and `rogue collect`.")]
pub struct ServeArgs {
    /// Read a password from standard input (its first line), print its Argon2id hash for serve.users_file, and exit
    #[arg(long)]
    pub hash_password: bool,
    /// Listen here instead of the configuration's serve.listen
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.hash_password {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            bail!("the password on standard input is empty");
        }
        println!("{}", auth::hash_password(password).map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?);
        return Ok(ExitCode::SUCCESS);
    }
    let file = config::locate(args.config.file.config.as_deref())?;
    let mut config = Config::load(&file)?;
    if let Some(listen) = args.listen {
        if !listen.ip().is_loopback() && config.serve.users_file.is_none() {
            bail!(
                "--listen {listen} is not a loopback address: the console shows the network's hosts, so it needs \
                 serve.users_file in {}",
                file.display()
            );
        }
        config.serve.listen = listen;
    }
    // Pages show what DNS answered before, from the store; they never ask.
    let paths = args.config.paths(false);
    let console = Arc::new(Console::new(paths, &config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let listen = config.serve.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("serve.listen: cannot listen on {listen}"))?;
        eprintln!(
            "rogue: the console is at http://{}/ ({})",
            listener.local_addr()?,
            if config.serve.allow_actions { "analysts may act after logging in" } else { "read-only" }
        );
        serve::serve(listener, console, stop_signal()).await.context("the console stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes at SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
