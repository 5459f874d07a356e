//! What the configuration says about places: the names of areas (towns,
//! villages) and where areas and terminals lie on the console's map. The
//! certificates say which codes exist; this gives them names people know.

use std::collections::HashMap;

use anyhow::{bail, Context};
use certs::AreaCode;
use serde::{Deserialize, Serialize};

/// Most areas and sites a configuration may name.
pub const MAX_AREAS: usize = 10_000;
pub const MAX_SITES: usize = 100_000;
/// Longest name of an area or terminal, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// `[[areas]]`: an area's name and, optionally, its place on the map
/// (longitude and latitude, degrees).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaEntry {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub lon: Option<f64>,
    #[serde(default)]
    pub lat: Option<f64>,
}

/// `[[sites]]`: a terminal (certificate serial, 16 hex digits), its name
/// and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteEntry {
    pub terminal: String,
    #[serde(default)]
    pub name: String,
    pub lon: f64,
    pub lat: f64,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub lon: f64,
    pub lat: f64,
}

#[derive(Debug, Default)]
pub struct Places {
    names: HashMap<AreaCode, String>,
    points: HashMap<AreaCode, (f64, f64)>,
    sites: HashMap<u64, Site>,
}

fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        bail!("{what}: a name of 1 to {MAX_NAME_CHARS} printable characters");
    }
    Ok(())
}

fn check_point(what: &str, lon: f64, lat: f64) -> anyhow::Result<()> {
    if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
        bail!("{what}: lon must lie in -180..=180 and lat in -90..=90");
    }
    Ok(())
}

impl Places {
    /// Checks the `[[areas]]` and `[[sites]]` tables, naming the first bad
    /// entry and field.
    pub fn from_config(areas: &[AreaEntry], sites: &[SiteEntry]) -> anyhow::Result<Places> {
        if areas.len() > MAX_AREAS {
            bail!("areas: {} entries; the limit is {MAX_AREAS}", areas.len());
        }
        if sites.len() > MAX_SITES {
            bail!("sites: {} entries; the limit is {MAX_SITES}", sites.len());
        }
        let mut p = Places::default();
        for (i, a) in areas.iter().enumerate() {
            let code: AreaCode = a.code.parse().with_context(|| {
                format!("areas[{i}].code: {:?} is not a 12-digit area code", a.code)
            })?;
            check_name(&format!("areas[{i}].name"), &a.name)?;
            if p.names.insert(code, a.name.clone()).is_some() {
                bail!("areas[{i}].code: {code} is named twice");
            }
            match (a.lon, a.lat) {
                (Some(lon), Some(lat)) => {
                    check_point(&format!("areas[{i}]"), lon, lat)?;
                    p.points.insert(code, (lon, lat));
                }
                (None, None) => {}
                _ => bail!("areas[{i}]: give both lon and lat, or neither"),
            }
        }
        for (i, s) in sites.iter().enumerate() {
            let serial = u64::from_str_radix(&s.terminal, 16)
                .ok()
                .filter(|_| s.terminal.len() == 16)
                .with_context(|| {
                    format!(
                        "sites[{i}].terminal: {:?} is not a certificate serial (16 hex digits)",
                        s.terminal
                    )
                })?;
            if !s.name.is_empty() {
                check_name(&format!("sites[{i}].name"), &s.name)?;
            }
            check_point(&format!("sites[{i}]"), s.lon, s.lat)?;
            p.sites.insert(
                serial,
                Site {
                    name: s.name.clone(),
                    lon: s.lon,
                    lat: s.lat,
                },
            );
        }
        Ok(p)
    }

    /// The area's name, or its code when it has none.
    pub fn name(&self, a: AreaCode) -> String {
        self.names.get(&a).cloned().unwrap_or_else(|| a.to_string())
    }

    pub fn has_name(&self, a: AreaCode) -> bool {
        self.names.contains_key(&a)
    }

    /// The area's names from just below `top` down to it: 蛟桥镇 › 前进村.
    pub fn path(&self, a: AreaCode, top: &[AreaCode]) -> String {
        let mut parts = vec![self.name(a)];
        let mut at = a;
        while let Some(up) = at.parent() {
            if !top.iter().any(|t| t.covers(up) && *t != up) {
                break;
            }
            parts.push(self.name(up));
            at = up;
        }
        parts.reverse();
        parts.join(" › ")
    }

    pub fn point(&self, a: AreaCode) -> Option<(f64, f64)> {
        self.points.get(&a).copied()
    }

    pub fn site(&self, serial: u64) -> Option<&Site> {
        self.sites.get(&serial)
    }

    /// Every named area, for the area tree.
    pub fn named(&self) -> impl Iterator<Item = AreaCode> + '_ {
        self.names.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(code: &str, name: &str) -> AreaEntry {
        AreaEntry {
            code: code.into(),
            name: name.into(),
            lon: None,
            lat: None,
        }
    }

    #[test]
    fn paths_name_each_level_below_the_scope() {
        let p = Places::from_config(
            &[
                area("360121102000", "蛟桥镇"),
                area("360121102201", "前进村"),
            ],
            &[],
        )
        .unwrap();
        let county: AreaCode = "360121000000".parse().unwrap();
        let village: AreaCode = "360121102201".parse().unwrap();
        assert_eq!(p.path(village, &[county]), "蛟桥镇 › 前进村");
        let unnamed: AreaCode = "360121103201".parse().unwrap();
        assert_eq!(p.path(unnamed, &[county]), "360121103000 › 360121103201");
        // A village platform shows its own name only.
        assert_eq!(p.path(village, &[village]), "前进村");
    }

    #[test]
    fn bad_entries_name_the_entry_and_field() {
        let e = Places::from_config(&[area("36012", "x")], &[]).unwrap_err();
        assert!(e.to_string().starts_with("areas[0].code"), "{e}");
        let e = Places::from_config(&[area("360121102000", "")], &[]).unwrap_err();
        assert!(e.to_string().starts_with("areas[0].name"), "{e}");
        let mut far = area("360121102000", "镇");
        far.lon = Some(200.0);
        far.lat = Some(1.0);
        let e = Places::from_config(&[far], &[]).unwrap_err();
        assert!(e.to_string().starts_with("areas[0]"), "{e}");
        let site = SiteEntry {
            terminal: "xyz".into(),
            name: String::new(),
            lon: 1.0,
            lat: 1.0,
        };
        let e = Places::from_config(&[], &[site]).unwrap_err();
        assert!(e.to_string().starts_with("sites[0].terminal"), "{e}");
    }
}
