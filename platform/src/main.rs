//! `platform run --config platform.toml` runs a district, town or village
//! platform; `platform demo` runs the whole district on this machine.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    /// Run a platform from its TOML configuration.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// The whole district on this machine: fresh PKI, every platform and
    /// terminal on loopback, an alert and a village notice, a summary.
    Demo {
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 5)]
        towns: usize,
        #[arg(long, default_value_t = 87)]
        villages: usize,
        #[arg(long, default_value_t = 600)]
        terminals: usize,
        /// The alert's audio (default: the shipped Mandarin flood alert).
        #[arg(long)]
        alert: Option<PathBuf>,
        /// The village notice's audio.
        #[arg(long)]
        notice: Option<PathBuf>,
        /// Keep the temporary folder (PKI, stores, terminal 0's WAV) here.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/audio")
        .join(name)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let cfg = platform::config::PlatformConfig::load(&config)?;
            let bundle = certs::Bundle::read_file(&cfg.bundle, certs::time::unix_now())
                .with_context(|| format!("loading bundle {}", cfg.bundle.display()))?;
            let token = platform::config::api_token(&cfg.api_token_file)?;
            let handle = platform::start(platform::PlatformOptions {
                name: cfg.name,
                bundle,
                listen: cfg.listen,
                http: cfg.http,
                parents: cfg.parents,
                store: cfg.store,
                api_token: token,
                ingest: codec::IngestConfig {
                    encoder: codec::EncoderConfig {
                        bitrate_bps: cfg.bitrate_bps,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                lead_ms: cfg.lead_ms,
                expiry_warning: std::time::Duration::from_secs(cfg.expiry_warning_days * 86_400),
            })
            .await?;
            tokio::signal::ctrl_c().await?;
            handle.kill();
        }
        Command::Demo {
            json,
            towns,
            villages,
            terminals,
            alert,
            notice,
            keep,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let temp = tempfile::tempdir()?;
            let dir = match &keep {
                Some(k) => {
                    std::fs::create_dir_all(k)?;
                    k.clone()
                }
                None => temp.path().to_path_buf(),
            };
            let summary = platform::demo::run(platform::demo::DemoOptions {
                layout: certs::pki::Layout {
                    towns,
                    villages,
                    terminals,
                },
                alert: alert.unwrap_or_else(|| asset("alert-zh.wav")),
                notice: notice.unwrap_or_else(|| asset("notice-zh-48k.flac")),
                verbose: !json,
                speaker: cfg!(feature = "speaker"),
                dir,
                platform_runtime: None,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                let a = &summary.activation_ms;
                println!("\n== 演示结果 / demo summary ==");
                println!(
                    "terminals:              {} ({} connected, started in {:.1} s)",
                    summary.terminals, summary.connected, summary.startup_s
                );
                println!(
                    "alert played in full:   {} / {}",
                    summary.played_full, summary.terminals
                );
                println!(
                    "activation (API → first sample): p50 {} ms, p95 {} ms, max {} ms",
                    a.p50, a.p95, a.max
                );
                println!("refusals:               {}", summary.refused);
                println!(
                    "village notice played:  {} / {} in the village, {} outside it",
                    summary.notice_played,
                    summary.notice_village_terminals,
                    summary.notice_outside_village
                );
                if let Some(k) = keep {
                    println!(
                        "kept in {} (terminal 0's audio: terminals/terminal-0-0-0/played.wav)",
                        k.display()
                    );
                }
            }
        }
    }
    Ok(())
}
