//! Names and map places for a generated district, as a county would
//! configure them (`[[areas]]`): towns and villages with Chinese names on a
//! plausible map around the county seat.

use certs::pki::DistrictPki;
use platform::console::places::AreaEntry;

const TOWNS: [&str; 10] = [
    "蛟桥镇",
    "乐化镇",
    "溪霞镇",
    "樵舍镇",
    "昌东镇",
    "麦园镇",
    "象山镇",
    "石埠镇",
    "铁河乡",
    "联圩镇",
];

const VILLAGES: [&str; 24] = [
    "前进村",
    "红星村",
    "新村",
    "胜利村",
    "东湖村",
    "西山村",
    "南岗村",
    "北岭村",
    "和平村",
    "光明村",
    "团结村",
    "丰收村",
    "长岭村",
    "河口村",
    "桥头村",
    "杨家村",
    "李家村",
    "王家村",
    "张家村",
    "陈家村",
    "石桥村",
    "黄泥村",
    "枫林村",
    "竹园村",
];

/// The county seat, degrees.
const CENTRE: (f64, f64) = (115.85, 28.75);

/// `[[areas]]` for `pki`: the county, every town (on a ring around the
/// seat) and every village (on a small ring around its town).
pub fn district_areas(pki: &DistrictPki) -> Vec<AreaEntry> {
    let county = pki.district.cert().scope()[0];
    let mut out = vec![AreaEntry {
        code: county.to_string(),
        name: "经开区".into(),
        lon: None,
        lat: None,
    }];
    let n_towns = pki.towns.len().max(1);
    for (t, town) in pki.towns.iter().enumerate() {
        let a = t as f64 / n_towns as f64 * std::f64::consts::TAU;
        let (tx, ty) = (CENTRE.0 + 0.12 * a.cos(), CENTRE.1 + 0.09 * a.sin());
        let name = match TOWNS.get(t) {
            Some(n) => n.to_string(),
            None => format!("第{}镇", t + 1),
        };
        out.push(AreaEntry {
            code: town.area.to_string(),
            name,
            lon: Some(tx),
            lat: Some(ty),
        });
        let n_v = town.villages.len().max(1);
        for (v, village) in town.villages.iter().enumerate() {
            let b = v as f64 / n_v as f64 * std::f64::consts::TAU + a;
            let r = 0.025 + 0.004 * (n_v as f64).sqrt();
            let name = match VILLAGES.get(v) {
                Some(n) => n.to_string(),
                None => format!("第{}村", v + 1),
            };
            out.push(AreaEntry {
                code: village.area.to_string(),
                name,
                lon: Some(tx + r * b.cos()),
                lat: Some(ty + r * 0.8 * b.sin()),
            });
        }
    }
    out
}
