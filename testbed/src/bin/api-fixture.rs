//! `cargo run -p testbed --bin api-fixture -- --token-file T`: a small
//! district (one platform of each tier, one terminal, null sinks) whose
//! district API runs until Ctrl-C or SIGTERM, for tools that exercise the
//! API from outside (schemathesis in CI). Prints the API's base URL; writes
//! a token of an account holding every role to `--token-file`.

use std::path::PathBuf;

use clap::Parser;
use testbed::{LocalDistrict, LocalOptions};

#[derive(Parser)]
#[command(name = "api-fixture", about = "A small district whose API stays up")]
struct Cli {
    /// Where the all-roles token goes (mode 0600).
    #[arg(long)]
    token_file: PathBuf,
    /// Where the district lives (a temporary folder if not given).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    testbed::init_logging();
    let cli = Cli::parse();
    let tmp = tempfile::tempdir()?;
    let dir = cli.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let district = LocalDistrict::start(LocalOptions::null(&dir)).await?;
    let accounts = &district.district.workflow.accounts;
    let now = certs::time::unix_now_ms();
    let every: std::collections::BTreeSet<_> = platform::accounts::Role::ALL.into_iter().collect();
    accounts.add(
        "fixture",
        "测试",
        every,
        vec![],
        &format!("pw-{}", now),
        now,
    )?;
    let (_, token) = accounts.add_token("fixture", "api-fixture", None, now)?;
    std::fs::write(&cli.token_file, &token)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cli.token_file, std::fs::Permissions::from_mode(0o600))?;
    }
    let addr = district
        .district
        .http_addr
        .ok_or_else(|| anyhow::anyhow!("the district has no API"))?;
    println!("http://{addr}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
