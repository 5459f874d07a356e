//! A whole district's PKI built in one call: the demo's fresh PKI and the
//! tests' fixtures. Area codes follow the national scheme under one county.

use crate::area::{AreaCode, ResourceCode};
use crate::cert::{IssueError, Tier};
use crate::identity::Identity;

/// How many of each tier to create. Villages are spread over the towns and
/// terminals over the villages, round-robin.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub towns: usize,
    pub villages: usize,
    pub terminals: usize,
}

impl Layout {
    /// The deployment of the brief: 5 towns, 87 villages, 600 terminals.
    pub const DISTRICT: Layout = Layout {
        towns: 5,
        villages: 87,
        terminals: 600,
    };

    /// One town, one village, one terminal: the smallest whole tree.
    pub const ONE_OF_EACH: Layout = Layout {
        towns: 1,
        villages: 1,
        terminals: 1,
    };
}

/// The county the generated district covers.
pub const DISTRICT_AREA: u64 = 360_121_000_000;

/// Type digits (8) of generated resource codes. GY/T 386 defines the real
/// table; these keep platforms and terminals apart until that is mapped.
const TYPE_PLATFORM: &str = "01010100";
const TYPE_TERMINAL: &str = "03010100";

pub fn resource_code(area: AreaCode, type_digits: &str, index: usize) -> ResourceCode {
    // Type digits (8) then sequence (2): spread larger indexes into the type.
    let (type_num, seq) = (index / 100, index % 100);
    let type_base: u64 = type_digits.parse().unwrap_or(0);
    let s = format!("4{area}{:08}{seq:02}", type_base + type_num as u64);
    s.parse()
        .unwrap_or_else(|_| panic!("generated resource code {s} is malformed"))
}

#[derive(Debug)]
pub struct VillagePki {
    pub area: AreaCode,
    pub identity: Identity,
    pub terminals: Vec<Identity>,
}

#[derive(Debug)]
pub struct TownPki {
    pub area: AreaCode,
    pub identity: Identity,
    pub villages: Vec<VillagePki>,
}

#[derive(Debug)]
pub struct DistrictPki {
    pub root: Identity,
    pub district: Identity,
    pub towns: Vec<TownPki>,
}

impl DistrictPki {
    /// Creates root, district, towns, villages and terminals, all valid over
    /// `validity` (unix seconds) and issued at `now`.
    pub fn generate(layout: Layout, validity: (i64, i64), now: i64) -> Result<Self, IssueError> {
        let county = AreaCode::from_u64(DISTRICT_AREA)
            .map_err(|e| IssueError::ScopeOutsideIssuer(e.to_string()))?;
        let province = AreaCode::from_u64(DISTRICT_AREA / 10_000_000_000 * 10_000_000_000)
            .map_err(|e| IssueError::ScopeOutsideIssuer(e.to_string()))?;
        let root = Identity::new_root(
            "应急广播根证书",
            resource_code(province, TYPE_PLATFORM, 0),
            vec![province],
            validity,
        )?;
        let district = root.issue_child(
            Tier::District,
            "经开区应急广播平台",
            resource_code(county, TYPE_PLATFORM, 0),
            vec![county],
            validity,
            now,
        )?;
        let mut towns = Vec::with_capacity(layout.towns);
        for t in 0..layout.towns {
            let area = area(DISTRICT_AREA + (100 + t as u64) * 1_000);
            let identity = district.issue_child(
                Tier::Town,
                &format!("第{}镇", t + 1),
                resource_code(area, TYPE_PLATFORM, 0),
                vec![area],
                validity,
                now,
            )?;
            towns.push(TownPki {
                area,
                identity,
                villages: Vec::new(),
            });
        }
        for v in 0..layout.villages {
            let town = &mut towns[v % layout.towns.max(1)];
            let n = town.villages.len() as u64;
            if n >= 798 {
                return Err(IssueError::ScopeSize);
            }
            let area = area(town.area.as_u64() + 201 + n);
            let identity = town.identity.issue_child(
                Tier::Village,
                &format!("{}第{}村", town.identity.cert().body().name, n + 1),
                resource_code(area, TYPE_PLATFORM, 0),
                vec![area],
                validity,
                now,
            )?;
            town.villages.push(VillagePki {
                area,
                identity,
                terminals: Vec::new(),
            });
        }
        let village_count = towns.iter().map(|t| t.villages.len()).sum::<usize>();
        let terminals = if village_count == 0 {
            0
        } else {
            layout.terminals
        };
        for i in 0..terminals {
            let (t, v) = nth_village(&towns, i % village_count);
            let village = &mut towns[t].villages[v];
            let n = village.terminals.len();
            // The district certifies terminals, not their village: revoking or
            // re-keying a village or town platform must never cut off the
            // terminals below it (they fail over and keep receiving lists).
            let identity = district.issue_child(
                Tier::Terminal,
                &format!("{}终端{}", village.identity.cert().body().name, n + 1),
                resource_code(village.area, TYPE_TERMINAL, n),
                vec![village.area],
                validity,
                now,
            )?;
            village.terminals.push(identity);
        }
        Ok(DistrictPki {
            root,
            district,
            towns,
        })
    }

    pub fn villages(&self) -> impl Iterator<Item = &VillagePki> {
        self.towns.iter().flat_map(|t| t.villages.iter())
    }

    pub fn terminals(&self) -> impl Iterator<Item = (&VillagePki, &Identity)> {
        self.villages()
            .flat_map(|v| v.terminals.iter().map(move |t| (v, t)))
    }
}

fn area(v: u64) -> AreaCode {
    AreaCode::from_u64(v).unwrap_or_else(|e| panic!("generated area code: {e}"))
}

/// Town and village index of the i-th village overall.
fn nth_village(towns: &[TownPki], mut i: usize) -> (usize, usize) {
    for (t, town) in towns.iter().enumerate() {
        if i < town.villages.len() {
            return (t, i);
        }
        i -= town.villages.len();
    }
    (0, 0)
}

/// A copy of an identity: keys are not `Clone` on purpose, but tests and
/// the demo provision the same identity more than once.
pub fn copy(id: &Identity) -> Identity {
    Identity {
        key: crate::key::SecretKey::from_pem(&id.key.to_pem(), "copy")
            .expect("a key round-trips through PEM"),
        chain: id.chain.clone(),
    }
}
