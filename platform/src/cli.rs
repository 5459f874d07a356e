//! `platform run --config platform.toml [--OPTION VALUE ...]` runs a
//! district, town or village platform (the certificate decides which).
//! `platform account ...` and `platform audit ...` work on a stopped
//! platform's store. The binary is this and nothing else (tests run it
//! under another name).

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use crate::accounts::Role;
use crate::{Listeners, Platform, PlatformConfig};
use anyhow::Context;
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
        settings: Box<PlatformConfig>,
    },
    /// Where a platform serves its console, and the fingerprint of its
    /// HTTPS certificate (works while it runs).
    Status {
        #[arg(long)]
        config: PathBuf,
    },
    /// Accounts of a stopped platform (the first admin; a running platform
    /// is managed over its API).
    Account {
        #[command(subcommand)]
        action: AccountCommand,
    },
    /// The audit trail: verify a store or an export, export a store.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Speak live (实时喊话) through a running platform's API: from the
    /// microphone (builds with the `microphone` feature) or a recording.
    /// Ctrl-C ends the broadcast with its signed end marker.
    Live(LiveArgs),
    /// Makes this platform's SM2 key for the GY/T gateway (`[gateway]
    /// sm2_key`) and prints its public key, which the upper platform
    /// registers with the certificate serial it issues.
    GatewayKey {
        /// The key file to write (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct LiveArgs {
    /// The platform's console, e.g. http://127.0.0.1:8080 (loopback).
    #[arg(long)]
    api: String,
    /// A file holding the speaker's API token (or set EBS_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Target area codes, comma-separated.
    #[arg(long)]
    areas: String,
    /// emergency, drill or daily.
    #[arg(long, default_value = "emergency")]
    class: String,
    /// 1 (I) to 4 (IV).
    #[arg(long, default_value = "2")]
    severity: String,
    #[arg(long)]
    title: String,
    /// How long the broadcast may last at most, minutes.
    #[arg(long, default_value_t = 30)]
    valid_minutes: u32,
    /// The approver present (their password is asked without echo).
    #[arg(long)]
    approver: Option<String>,
    /// Speak this recording instead of the microphone.
    #[arg(long)]
    input: Option<PathBuf>,
    /// End after this many seconds.
    #[arg(long)]
    seconds: Option<u64>,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Creates an account; the password is read without echo (or, with
    /// --password-stdin, one line from standard input).
    Add {
        #[arg(long)]
        config: PathBuf,
        /// drafter, approver, clerk, maintainer, auditor, admin (repeat or comma-separate).
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Display name, e.g. 张三.
        #[arg(long, default_value = "")]
        display_name: String,
        /// Areas the account may address (default: the platform's scope).
        #[arg(long = "area", value_delimiter = ',')]
        areas: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
        name: String,
    },
    /// Creates an API token for an account and prints it (once).
    Token {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "")]
        label: String,
        name: String,
    },
    /// Lists the accounts.
    List {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Checks the hash chain and the seals; names the first bad entry.
    Verify {
        /// The platform's configuration: its store is checked, its bundle
        /// gives the sealing key.
        #[arg(long)]
        config: Option<PathBuf>,
        /// An export (JSON lines) to check instead of the store.
        #[arg(long)]
        export: Option<PathBuf>,
        /// The platform's certificate (PEM) or bundle, for an export.
        #[arg(long)]
        cert: Vec<PathBuf>,
    },
    /// Writes the trail as JSON lines (verifiable) or CSV.
    Export {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "jsonl")]
        format: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The `platform` program.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    match Cli::from_arg_matches(&matches)?.command {
        Command::Run { config, .. } => {
            init_logging();
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
        Command::Account { action } => account(action),
        Command::Audit { action } => audit(action),
        Command::Status { config } => status(&config),
        Command::Live(args) => live(args).await,
        Command::GatewayKey { out } => gateway_key(&out),
    }
}

async fn live(a: LiveArgs) -> anyhow::Result<()> {
    use crate::live_client::{stream, LiveClient, LiveSource};
    let token = match &a.token_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("token_file: cannot read {}", p.display()))?
            .trim()
            .to_string(),
        None => std::env::var("EBS_TOKEN")
            .map_err(|_| anyhow::anyhow!("token_file: give --token-file or set EBS_TOKEN"))?,
    };
    let mut open = serde_json::json!({
        "areas": a.areas,
        "class": a.class,
        "severity": a.severity,
        "title": a.title,
        "valid_minutes": a.valid_minutes.to_string(),
        "format": "pcm16",
    });
    if let Some(name) = &a.approver {
        let password = rpassword::prompt_password(format!("{name}'s password (在场审核人密码): "))?;
        open["approver"] = serde_json::json!({"name": name, "password": password});
    }
    let (client, answer) = LiveClient::open(&a.api, &token, open).await?;
    if answer["state"] != "on_air" {
        anyhow::bail!(
            "the platform refused: {} ({})",
            answer["message"].as_str().unwrap_or("?"),
            answer["message_zh"].as_str().unwrap_or("")
        );
    }
    eprintln!(
        "on air: broadcast {} (Ctrl-C ends it)",
        answer["id"].as_str().unwrap_or("?")
    );
    let source = match a.input {
        Some(p) => LiveSource::File(p),
        None => LiveSource::Microphone,
    };
    let summary = stream(client, source, a.seconds, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    println!("{summary}");
    Ok(())
}

fn status(path: &std::path::Path) -> anyhow::Result<()> {
    let c = load_config(path)?;
    println!("name:     {}", c.name);
    println!("quic:     {}", c.listen);
    match c.http {
        None => println!("console:  none (no http address configured)"),
        Some(addr) => match crate::api::tls::configured_fingerprint(&c)? {
            Some((cert, fp)) if c.tls_cert.is_some() || !addr.ip().is_loopback() => {
                println!("console:  https://{addr}/");
                println!("tls cert: {}", cert.display());
                println!("sha-256:  {fp}");
            }
            _ if addr.ip().is_loopback() => println!("console:  http://{addr}/ (plain HTTP, loopback only)"),
            _ => println!(
                "console:  https://{addr}/ (a self-signed certificate is made at first start; run again after it)"
            ),
        },
    }
    Ok(())
}

fn gateway_key(out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = gateway::SmKey::generate("");
    // Owner-only: it is a private key.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("{}: cannot create (it must not exist yet)", out.display()))?;
    f.write_all(format!("{}\n", key.secret_hex()).as_bytes())?;
    f.sync_all()?;
    println!("SM2 key written to {}", out.display());
    println!("public key (SEC1, hex): {}", key.public_hex());
    Ok(())
}

fn load_config(path: &std::path::Path) -> anyhow::Result<PlatformConfig> {
    let empty = clap::Command::new("platform");
    let matches =
        <PlatformConfig as clap::Args>::augment_args(empty).get_matches_from(["platform"]);
    let c: PlatformConfig = transport::config::load(&matches, Some(path))?;
    c.check()?;
    Ok(c)
}

fn read_password(stdin: bool) -> anyhow::Result<String> {
    if stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password("password (密码): ")?;
    let again = rpassword::prompt_password("again (再次输入): ")?;
    anyhow::ensure!(first == again, "the two passwords differ");
    Ok(first)
}

fn account(action: AccountCommand) -> anyhow::Result<()> {
    let now = crate::now_ms();
    match action {
        AccountCommand::Add {
            config,
            roles,
            display_name,
            areas,
            password_stdin,
            name,
        } => {
            let c = load_config(&config)?;
            let roles = roles
                .iter()
                .map(|r| {
                    Role::parse(r.trim()).with_context(|| {
                        format!("role {r:?}: one of drafter, approver, clerk, maintainer, auditor, admin")
                    })
                })
                .collect::<anyhow::Result<BTreeSet<_>>>()?;
            let areas = areas
                .iter()
                .map(|a| a.parse().with_context(|| format!("area {a:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (accounts, audit) = crate::open_offline(&c)?;
            let password = read_password(password_stdin)?;
            let a = accounts.add(&name, &display_name, roles.clone(), areas, &password, now)?;
            audit.record(
                crate::audit::Record::new("shell", "account.create", format!("account {}", a.name))
                    .detail(format!(
                        "roles {}",
                        roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")
                    )),
                now,
            )?;
            println!("account {} created", a.name);
            Ok(())
        }
        AccountCommand::Token {
            config,
            label,
            name,
        } => {
            let c = load_config(&config)?;
            let (accounts, audit) = crate::open_offline(&c)?;
            let (view, token) = accounts.add_token(&name, &label, None, now)?;
            audit.record(
                crate::audit::Record::new(
                    "shell",
                    "token.create",
                    format!("account {name} token {}", view.id),
                ),
                now,
            )?;
            println!("{token}");
            Ok(())
        }
        AccountCommand::List { config } => {
            let c = load_config(&config)?;
            let (accounts, _) = crate::open_offline(&c)?;
            for a in accounts.list()? {
                let roles: Vec<&str> = a.roles.iter().map(|r| r.name()).collect();
                let locked = if a.is_locked(now) { " (locked)" } else { "" };
                println!(
                    "{}\t{}\t{}{locked}",
                    a.name,
                    a.display_name,
                    roles.join(",")
                );
            }
            Ok(())
        }
    }
}

fn keys_from(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, certs::PublicKey)>> {
    let mut keys = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        if let Ok(b) = certs::Bundle::read_file(p, certs::time::unix_now()) {
            for cert in &b.identity.chain {
                keys.push((format!("{:016x}", cert.serial()), *cert.public_key()));
            }
            continue;
        }
        let certs = certs::Certificate::all_from_pem(&text)
            .with_context(|| format!("{}: neither a bundle nor a certificate", p.display()))?;
        for cert in certs {
            keys.push((format!("{:016x}", cert.serial()), *cert.public_key()));
        }
    }
    Ok(keys)
}

fn audit(action: AuditCommand) -> anyhow::Result<()> {
    match action {
        AuditCommand::Verify {
            config,
            export,
            mut cert,
        } => {
            let lines: Vec<Vec<u8>> = match (&export, &config) {
                (Some(path), _) => std::fs::read(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect(),
                (None, Some(config)) => {
                    let c = load_config(config)?;
                    cert.push(c.bundle.clone());
                    let (_, trail) = crate::open_offline(&c)?;
                    trail.raw().collect::<Result<_, _>>()?
                }
                (None, None) => anyhow::bail!("give --config (a store) or --export (a file)"),
            };
            if let (Some(_), Some(config)) = (&export, &config) {
                cert.push(load_config(config)?.bundle);
            }
            let keys = keys_from(&cert)?;
            let lookup = |serial: &str| keys.iter().find(|(s, _)| s == serial).map(|(_, k)| *k);
            match crate::audit::verify(lines, &lookup) {
                Ok(v) => {
                    println!(
                        "audit trail good: {} entries, {} seals, signed up to entry {}",
                        v.entries, v.seals, v.last_sealed
                    );
                    if v.last_sealed < v.entries {
                        println!(
                            "entries {}..={} are chained but not yet sealed",
                            v.last_sealed + 1,
                            v.entries
                        );
                    }
                    Ok(())
                }
                Err(b) => anyhow::bail!("audit trail broken at {b}"),
            }
        }
        AuditCommand::Export {
            config,
            format,
            out,
        } => {
            let c = load_config(&config)?;
            let (_, trail) = crate::open_offline(&c)?;
            let bytes = match format.as_str() {
                "jsonl" => {
                    let mut out = Vec::new();
                    for line in trail.raw() {
                        out.extend_from_slice(&line?);
                        out.push(b'\n');
                    }
                    out
                }
                "csv" => crate::audit::to_csv(&trail.entries(0, usize::MAX)?).into_bytes(),
                other => anyhow::bail!("format {other:?}: jsonl or csv"),
            };
            match out {
                Some(p) => {
                    std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
            Ok(())
        }
    }
}
