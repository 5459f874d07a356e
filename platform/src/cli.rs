//! `platform run --config platform.toml [--OPTION VALUE ...]` runs a
//! district, town or village platform (the certificate decides which).
//! The binary is this and nothing else (tests run it under another name).

use std::path::PathBuf;

use crate::{Listeners, Platform, PlatformConfig};
use clap::{FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "platform",
    version,
    about = "Emergency broadcast playout-control platform (应急广播播控平台)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a platform from its TOML configuration; options given here
    /// override the file.
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: PlatformConfig,
    },
}

/// The `platform` program: reads the command line and runs until Ctrl-C.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let Command::Run { config, .. } = Cli::from_arg_matches(&matches)?.command;
    let run = matches
        .subcommand_matches("run")
        .ok_or_else(|| anyhow::anyhow!("expected the run subcommand"))?;
    let settings: PlatformConfig = transport::config::load(run, config.as_deref())?;
    let platform = Platform::load(settings.clone())?;
    let listeners = Listeners::bind(&settings).await?;
    platform
        .run(listeners, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
