//! `certs`: the operator's tool for the trust chain.
//!
//! Creates the root and the district, issues town, village and terminal
//! certificates (tier and scope checked against the issuer), revokes and
//! publishes revocation lists, shows and verifies certificates and chains,
//! and writes provisioning bundles. Every misuse ends with a one-line error
//! and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use certs::cert::Certificate;
use certs::time::{format_local, parse_rfc3339, unix_now};
use certs::{
    AreaCode, Bundle, Identity, ResourceCode, RevocationList, RevocationState, SecretKey, Tier,
    TrustAnchor,
};

const DAY: i64 = 86_400;

#[derive(Parser)]
#[command(
    name = "certs",
    version,
    about = "Trust chain tool of the emergency broadcast system (应急广播证书工具)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the root key and its self-signed certificate (keep the key offline).
    Root {
        #[command(flatten)]
        subject: Subject,
        /// Validity in days from now.
        #[arg(long, default_value_t = 20 * 365)]
        days: i64,
        #[command(flatten)]
        out: Output,
    },
    /// Issue a district, town, village or terminal certificate with a new key.
    Issue {
        #[command(flatten)]
        issuer: Issuer,
        /// Tier of the new certificate: district, town, village or terminal.
        #[arg(long)]
        tier: Tier,
        #[command(flatten)]
        subject: Subject,
        /// Validity in days from now (default: 5 years, capped at the issuer's expiry).
        #[arg(long)]
        days: Option<i64>,
        /// Certify the existing key at --key instead of creating one: moves a
        /// platform under a re-keyed issuer without changing its own key.
        #[arg(long)]
        reuse_key: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Sign a revocation list (root or district), extending a previous one.
    Revoke {
        #[command(flatten)]
        issuer: Issuer,
        /// Serial(s) to revoke, hex as shown by `certs show`.
        #[arg(long = "serial", required = true)]
        serials: Vec<String>,
        /// The signer's current list: its serials are kept and the number grows.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Where to write the new list.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print certificates, a revocation list or a bundle (never a private key).
    Show { file: PathBuf },
    /// Verify a chain against a root, optionally with revocation lists.
    Verify {
        /// The provisioned root certificate.
        #[arg(long)]
        root: PathBuf,
        /// The chain to check (PEM, from under the root down to the leaf).
        #[arg(long)]
        chain: PathBuf,
        /// Revocation lists to apply first.
        #[arg(long = "crl")]
        crls: Vec<PathBuf>,
        /// Check at this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Write a provisioning bundle (root, chain, key) for a terminal or platform.
    Bundle {
        #[arg(long)]
        root: PathBuf,
        /// The node's certificate chain (as written by `issue`).
        #[arg(long)]
        cert: PathBuf,
        /// The node's private key.
        #[arg(long)]
        key: PathBuf,
        /// Revocation lists in force (repeatable): the node refuses what
        /// they revoke from its first start.
        #[arg(long = "crl")]
        crls: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct Subject {
    /// Subject name, e.g. 蛟桥镇.
    #[arg(long)]
    name: String,
    /// 23-digit resource code.
    #[arg(long)]
    code: String,
    /// Area codes (12 digits) the subject may address; repeat or comma-separate.
    #[arg(long, value_delimiter = ',', required = true)]
    scope: Vec<String>,
}

#[derive(Args)]
struct Issuer {
    /// The issuer's private key.
    #[arg(long)]
    issuer_key: PathBuf,
    /// The issuer's certificate chain (for the root: its certificate).
    #[arg(long)]
    issuer_cert: PathBuf,
}

#[derive(Args)]
struct Output {
    /// Where to write the new private key (mode 0600, never overwritten).
    #[arg(long)]
    key: PathBuf,
    /// Where to write the certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    let now = unix_now();
    match command {
        Command::Root { subject, days, out } => {
            refuse_existing(&out)?;
            let (name, code, scope) = subject.parse()?;
            let root = Identity::new_root(&name, code, scope, (now - 60, now + days * DAY))?;
            write_identity(&root, &out)?;
            println!(
                "root {:016x} written to {}",
                root.cert().serial(),
                out.cert.display()
            );
        }
        Command::Issue {
            issuer,
            tier,
            subject,
            days,
            reuse_key,
            out,
        } => {
            if reuse_key {
                if out.cert.exists() {
                    bail!(
                        "{} already exists; refusing to overwrite",
                        out.cert.display()
                    );
                }
            } else {
                refuse_existing(&out)?;
            }
            let issuer = issuer.load()?;
            let (name, code, scope) = subject.parse()?;
            let issuer_end = issuer.cert().body().not_after;
            let not_after = match days {
                Some(d) => now + d * DAY,
                None => (now + 5 * 365 * DAY).min(issuer_end),
            };
            let not_before = (now - 60).max(issuer.cert().body().not_before);
            let child = if reuse_key {
                let key = SecretKey::read_file(&out.key)?;
                let chain = issuer
                    .certify(
                        certs::CertRequest {
                            tier,
                            name: name.clone(),
                            resource_code: code,
                            scope,
                            not_before,
                            not_after,
                            public_key: key.public(),
                        },
                        now,
                    )
                    .context("cannot issue")?;
                let child = Identity { key, chain };
                write_chain(&child, &out)?;
                child
            } else {
                let child = issuer
                    .issue_child(tier, &name, code, scope, (not_before, not_after), now)
                    .context("cannot issue")?;
                write_identity(&child, &out)?;
                child
            };
            println!(
                "{} {:016x} ({}) issued by {:016x}, written to {}",
                tier,
                child.cert().serial(),
                name,
                issuer.cert().serial(),
                out.cert.display()
            );
        }
        Command::Revoke {
            issuer,
            serials,
            previous,
            out,
        } => {
            if out.exists() {
                bail!("{} already exists", out.display());
            }
            let issuer = issuer.load()?;
            let serials = serials
                .iter()
                .map(|s| parse_serial(s))
                .collect::<Result<Vec<_>>>()?;
            let previous = match previous {
                Some(p) => Some(
                    RevocationList::from_pem(&read(&p)?)
                        .with_context(|| format!("{} is not a revocation list", p.display()))?,
                ),
                None => None,
            };
            let list = RevocationList::next(&issuer, previous.as_ref(), &serials, now)?;
            let (number, tier) = (list.number, issuer.cert().tier());
            std::fs::write(&out, list.to_pem())
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "revocation list number {number} by {tier} {:016x}: {} serial(s), written to {}",
                issuer.cert().serial(),
                list.revoked.len(),
                out.display()
            );
        }
        Command::Show { file } => show(&file)?,
        Command::Verify {
            root,
            chain,
            crls,
            at,
        } => {
            let when = match at {
                Some(s) => parse_rfc3339(&s)
                    .with_context(|| format!("--at {s:?} is not an RFC 3339 time"))?,
                None => now,
            };
            let anchor = load_anchor(&root)?;
            let mut state = RevocationState::new();
            for crl in crls {
                let list = RevocationList::from_pem(&read(&crl)?)
                    .with_context(|| format!("{} is not a revocation list", crl.display()))?;
                state
                    .apply(list, &anchor, when)
                    .with_context(|| format!("revocation list {} refused", crl.display()))?;
            }
            let chain = load_chain(&chain)?;
            let leaf = anchor
                .verify(&chain, when, &state)
                .context("chain refused")?;
            println!("OK: {}", summary(leaf));
        }
        Command::Bundle {
            root,
            cert,
            key,
            crls,
            out,
        } => {
            let anchor = load_anchor(&root)?;
            let chain = load_chain(&cert)?;
            let key = SecretKey::read_file(&key)?;
            let lists = crls
                .iter()
                .map(|c| {
                    RevocationList::from_pem(&read(c)?)
                        .with_context(|| format!("{} is not a revocation list", c.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let bundle = Bundle::new(anchor.root().clone(), Identity { key, chain }, now)?
                .with_revocations(lists, now)?;
            bundle.write_file(&out)?;
            println!(
                "bundle for {} written to {}",
                summary(bundle.identity.cert()),
                out.display()
            );
        }
    }
    Ok(())
}

impl Subject {
    fn parse(self) -> Result<(String, ResourceCode, Vec<AreaCode>)> {
        let code = self.code.parse::<ResourceCode>()?;
        let scope = self
            .scope
            .iter()
            .map(|s| s.trim().parse::<AreaCode>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok((self.name, code, scope))
    }
}

impl Issuer {
    fn load(&self) -> Result<Identity> {
        let key = SecretKey::read_file(&self.issuer_key)?;
        let chain = load_chain(&self.issuer_cert)?;
        let id = Identity { key, chain };
        if id.key.public() != *id.cert().public_key() {
            bail!(
                "{} is not the key of {}",
                self.issuer_key.display(),
                self.issuer_cert.display()
            );
        }
        Ok(id)
    }
}

fn refuse_existing(out: &Output) -> Result<()> {
    for p in [&out.key, &out.cert] {
        if p.exists() {
            bail!("{} already exists; refusing to overwrite", p.display());
        }
    }
    Ok(())
}

fn write_identity(id: &Identity, out: &Output) -> Result<()> {
    id.key.write_file(&out.key)?;
    write_chain(id, out)
}

fn write_chain(id: &Identity, out: &Output) -> Result<()> {
    let pem: String = id.chain.iter().map(Certificate::to_pem).collect();
    std::fs::write(&out.cert, pem).with_context(|| format!("cannot write {}", out.cert.display()))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn load_chain(path: &Path) -> Result<Vec<Certificate>> {
    let chain = Certificate::all_from_pem(&read(path)?)
        .with_context(|| format!("{} holds an invalid certificate", path.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(chain)
}

fn load_anchor(path: &Path) -> Result<TrustAnchor> {
    let text = read(path)?;
    let blocks =
        pem::parse_many(&text).with_context(|| format!("{} is not PEM", path.display()))?;
    let block = blocks
        .iter()
        .find(|b| b.tag() == "EBS ROOT CERTIFICATE" || b.tag() == certs::cert::CERT_PEM_TAG)
        .with_context(|| format!("{} holds no certificate", path.display()))?;
    let root = Certificate::decode(block.contents())
        .with_context(|| format!("{} holds an invalid certificate", path.display()))?;
    TrustAnchor::new(root).with_context(|| format!("{} is not a root certificate", path.display()))
}

fn parse_serial(s: &str) -> Result<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .with_context(|| format!("serial {s:?} is not hex"))
}

fn summary(c: &Certificate) -> String {
    let b = c.body();
    format!(
        "{} {:016x} {} ({})",
        b.tier, b.serial, b.name, b.resource_code
    )
}

fn show(file: &Path) -> Result<()> {
    let text = read(file)?;
    let blocks =
        pem::parse_many(&text).with_context(|| format!("{} is not PEM", file.display()))?;
    if blocks.is_empty() {
        bail!("{} holds nothing to show", file.display());
    }
    for b in blocks {
        match b.tag() {
            "EBS CERTIFICATE" | "EBS ROOT CERTIFICATE" => {
                let c = Certificate::decode(b.contents())
                    .with_context(|| format!("{} holds an invalid certificate", file.display()))?;
                let body = c.body();
                println!("certificate {:016x}", body.serial);
                println!("  tier:          {}", body.tier);
                println!("  name:          {}", body.name);
                println!("  resource code: {}", body.resource_code);
                let scope: Vec<String> = body.scope.iter().map(|a| a.to_string()).collect();
                println!("  scope:         {}", scope.join(", "));
                println!(
                    "  valid:         {} .. {}",
                    format_local(body.not_before),
                    format_local(body.not_after)
                );
                println!("  public key:    {}", body.public_key.fingerprint());
                println!("  issuer:        {:016x}", body.issuer_serial);
            }
            certs::revocation::CRL_PEM_TAG => {
                let l = RevocationList::decode(b.contents()).with_context(|| {
                    format!("{} holds an invalid revocation list", file.display())
                })?;
                println!("revocation list number {}", l.number);
                println!("  signer:  {:016x}", l.signer_serial);
                println!("  issued:  {}", format_local(l.issued_at));
                let s: Vec<String> = l.revoked.iter().map(|s| format!("{s:016x}")).collect();
                println!(
                    "  revoked: {}",
                    if s.is_empty() {
                        "(none)".into()
                    } else {
                        s.join(", ")
                    }
                );
            }
            "EBS ED25519 PRIVATE KEY" => println!("private key (not shown)"),
            other => println!("unknown block {other:?} (skipped)"),
        }
    }
    Ok(())
}
