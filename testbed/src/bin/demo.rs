//! `cargo run --release -p testbed --bin demo`: the whole seed district on
//! this machine (1 district, 5 towns, 87 villages, 600 terminals), an alert,
//! a village notice, a day's programmes on three villages, two alerts from the city over
//! GY/T (one played, one left for review), a summary; then the district's console keeps serving
//! until Ctrl-C, with demo accounts whose random passwords are printed
//! once. `--json` prints the summary as one object and exits;
//! `--exit-after SECONDS` bounds the serving (CI).

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
    /// Stop serving the console this many seconds after the summary
    /// (default: serve until Ctrl-C; with --json: exit at once).
    #[arg(long)]
    exit_after: Option<u64>,
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
    let (summary, mut district) = testbed::demo::run_district(testbed::demo::DemoOptions {
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
        if cli.exit_after.is_none() {
            stop_terminal_0(&mut district).await;
            return Ok(());
        }
    } else {
        print_summary(&summary, cli.keep.as_deref());
    }
    serve(&district, cli.exit_after, !cli.json).await;
    stop_terminal_0(&mut district).await;
    Ok(())
}

async fn stop_terminal_0(district: &mut testbed::LocalDistrict) {
    for t in district.terminals.iter_mut().take(1) {
        t.stop().await;
    }
}

/// Prints the console's address and the demo accounts (their passwords
/// are random, shown this once), then serves until Ctrl-C or `exit_after`.
async fn serve(district: &testbed::LocalDistrict, exit_after: Option<u64>, verbose: bool) {
    if verbose {
        let url = format!(
            "http://{}/",
            district
                .district
                .http_addr
                .expect("the district serves HTTP")
        );
        println!("\n== 控制台 / console ==");
        println!("open {url} and log in as one of (passwords shown only now):");
        for p in district.creds.people() {
            let roles: Vec<&str> = p.roles.iter().map(|r| r.name()).collect();
            println!("  {:<11} {:<28} {}", p.name, p.password, roles.join(", "));
        }
        println!("drafter drafts and submits, approver approves; watch coverage on 总览.");
        match exit_after {
            Some(s) => println!("serving for {s} s (--exit-after)"),
            None => println!("serving until Ctrl-C"),
        }
    }
    match exit_after {
        Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn print_summary(summary: &testbed::demo::Summary, keep: Option<&std::path::Path>) {
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
        "activation (publish → first sample): p50 {} ms, p95 {} ms, max {} ms",
        a.p50, a.p95, a.max
    );
    let l = &summary.lead;
    println!(
        "lead:                   {} ms, from the daily check's slowest arrival ({}); the alert's slowest: {} ms ({} acknowledged)",
        l.lead_ms,
        l.measured_from_ms
            .map_or("nothing measured".to_string(), |m| format!("{m} ms")),
        l.alert_slowest_arrival_ms,
        l.alert_acknowledged
    );
    println!(
        "daily check (first broadcast, configured lead): activation p50 {} ms",
        summary.check_activation_ms.p50
    );
    println!(
        "terminal clocks:        largest error {:.1} ms (± {:.1} ms), {} unsynced",
        summary.clock.offset_abs_max_us as f64 / 1000.0,
        summary.clock.uncertainty_max_us as f64 / 1000.0,
        summary.clock.unsynced
    );
    println!("refusals:               {}", summary.refused);
    println!(
        "village notice played:  {} / {} in the village, {} outside it",
        summary.notice_played, summary.notice_village_terminals, summary.notice_outside_village
    );
    let p = &summary.programmes;
    println!(
        "programmes:             daily news on {} villages (07:00, 12:00, 18:30{}), a one-off played from the cache at {} / {} of their terminals; quiet hours 22:00-06:00 in village {}",
        p.villages,
        if p.spoken { ", spoken from its text" } else { "" },
        p.played,
        p.terminals,
        p.quiet_village
    );
    let f = &summary.from_above;
    println!(
        "from the city (GY/T):   EBM {} severity II answered {} ({}), played at {} / {} terminals of its village; EBM {} severity III answered {} ({}), waiting in the review queue",
        f.relayed_ebm,
        f.relayed_result_code,
        f.relayed_answer,
        f.relayed_played,
        f.relayed_terminals,
        f.review_ebm,
        f.review_result_code,
        f.review_answer
    );
    let told = |states: &[u8]| {
        let words: Vec<&str> = states
            .iter()
            .map(|s| match s {
                1 => "waiting",
                2 => "playing",
                3 => "done",
                4 => "failed",
                5 => "cancelled",
                _ => "not processed",
            })
            .collect();
        if words.is_empty() {
            "nothing yet".to_string()
        } else {
            words.join(" → ")
        }
    };
    println!(
        "the city was told:      EBM {}: {}; EBM {}: {} (unasked, signed; the console's 上级预警 page)",
        f.relayed_ebm,
        told(&f.relayed_told),
        f.review_ebm,
        told(&f.review_told)
    );
    if let Some(k) = keep {
        println!(
            "kept in {} (terminal 0's audio: terminals/terminal-0-0-0/played.wav)",
            k.display()
        );
    }
}
