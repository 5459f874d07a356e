//! Provisioning one node the way the field does it: its bundle written to
//! a file and read back, its configuration pointing at it.

use std::net::SocketAddr;
use std::path::Path;

use certs::{Bundle, Identity};

pub use certs::pki::copy;

/// Writes `id`'s bundle (trusting `root`) to `dir/NAME.bundle` and reads
/// it back: the real provisioning path.
pub fn provision(
    dir: &Path,
    root: &Identity,
    id: &Identity,
    name: &str,
    now: i64,
) -> anyhow::Result<Bundle> {
    let path = dir.join(format!("{name}.bundle"));
    Bundle::new(root.cert().clone(), copy(id), now)?.write_file(&path)?;
    Ok(Bundle::read_file(&path, now)?)
}

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// The configuration of platform `name` with its store under `dir/stores`,
/// dialling `parents`.
pub fn platform_config(
    dir: &Path,
    name: &str,
    parents: Vec<SocketAddr>,
) -> platform::PlatformConfig {
    let mut c = platform::PlatformConfig::new(
        name,
        dir.join(format!("{name}.bundle")),
        loopback(),
        dir.join("stores").join(name),
    );
    c.parents = parents;
    c
}

/// Starts platform `name` provisioned in memory with `bundle`, on
/// loopback (with an HTTP API and the accounts of `creds` if `http`).
pub async fn start_platform(
    config: platform::PlatformConfig,
    bundle: Bundle,
    creds: &crate::Credentials,
    http: bool,
) -> anyhow::Result<platform::PlatformHandle> {
    // The GY/T listener, when configured, on loopback too.
    let gateway = config.gateway.as_ref().is_some_and(|g| g.listen.is_some());
    let mut p = platform::Platform::new(config, bundle)?;
    if http {
        let creds = creds.clone();
        p = p.with_accounts(Box::new(move |a| creds.provision(a)));
    }
    let mut listeners = platform::Listeners::loopback(http).await?;
    if gateway {
        listeners = listeners.with_gateway().await?;
    }
    p.start(listeners).await
}
