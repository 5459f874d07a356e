//! `terminal-agent --config terminal.toml`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "terminal-agent",
    version,
    about = "Emergency broadcast loudspeaker terminal (应急广播接收终端)"
)]
struct Cli {
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let cfg = terminal_agent::config::TerminalConfig::load(&cli.config)?;
    let bundle = certs::Bundle::read_file(&cfg.bundle, certs::time::unix_now())
        .with_context(|| format!("loading bundle {}", cfg.bundle.display()))?;
    let sink = codec::open_sink(&cfg.sink, 16_000)
        .with_context(|| format!("opening sink {:?}", cfg.sink))?;
    let handle = terminal_agent::start(terminal_agent::TerminalOptions {
        bundle,
        upstreams: cfg.upstreams,
        sink,
        store: cfg.store,
        heartbeat: Duration::from_secs(cfg.heartbeat_secs.max(1)),
        playout: codec::PlayoutConfig {
            delay_us: cfg.playout_delay_ms as i64 * 1000,
            ..Default::default()
        },
    })
    .await?;
    tokio::signal::ctrl_c().await?;
    handle.stop();
    Ok(())
}
