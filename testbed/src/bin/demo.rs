//! `cargo run --release -p testbed --bin demo`: the whole seed district on
//! this machine (1 district, 5 towns, 87 villages, 600 terminals), an alert,
//! a village notice, a summary (`--json` prints it as one object).

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "demo",
    about = "The whole district on this machine: fresh PKI, every platform and terminal on loopback, an alert and a village notice, a summary (应急广播演示)"
)]
struct Cli {
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
    /// Keep the PKI, stores and terminal 0's WAV in this folder.
    #[arg(long)]
    keep: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    testbed::init_logging();
    let temp = tempfile::tempdir()?;
    let dir = match &cli.keep {
        Some(k) => {
            std::fs::create_dir_all(k)?;
            k.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let summary = testbed::demo::run(testbed::demo::DemoOptions {
        layout: certs::pki::Layout {
            towns: cli.towns,
            villages: cli.villages,
            terminals: cli.terminals,
        },
        alert: cli.alert.unwrap_or_else(|| testbed::asset("alert-zh.wav")),
        notice: cli
            .notice
            .unwrap_or_else(|| testbed::asset("notice-zh-48k.flac")),
        verbose: !cli.json,
        speaker: cfg!(feature = "speaker"),
        dir,
        platform_runtime: None,
    })
    .await?;
    if cli.json {
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
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
        summary.notice_played, summary.notice_village_terminals, summary.notice_outside_village
    );
    if let Some(k) = cli.keep {
        println!(
            "kept in {} (terminal 0's audio: terminals/terminal-0-0-0/played.wav)",
            k.display()
        );
    }
    Ok(())
}
