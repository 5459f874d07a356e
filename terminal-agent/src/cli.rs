//! `terminal-agent --config terminal.toml [--OPTION VALUE ...]`. The
//! binary is this and nothing else (tests run it under another name).

use std::path::PathBuf;

use crate::config::TerminalConfig;
use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches};

#[derive(clap::Parser)]
#[command(
    name = "terminal-agent",
    version,
    about = "Emergency broadcast loudspeaker terminal (应急广播接收终端)"
)]
struct Cli {
    /// TOML configuration; options given here override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The `terminal-agent` program: reads the command line and runs until
/// Ctrl-C.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let matches = TerminalConfig::augment_args(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let config: TerminalConfig = transport::config::load(&matches, cli.config.as_deref())?;
    let host = crate::Host::new().context("starting the playout and store threads")?;
    let terminal = crate::Terminal::load(config)?;
    let handle = terminal.start(&host, None).await?;
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
