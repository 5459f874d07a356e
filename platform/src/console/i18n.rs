//! Message catalogues: every word the console shows comes from
//! `platform/console/i18n/<lang>.toml`, Simplified Chinese first. A key
//! missing from a catalogue shows as ⟦key⟧ (and the tests look for that).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Zh, Lang::En];

    pub fn tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Lang> {
        match tag {
            "zh-CN" | "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The other language (the switch).
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }
}

pub struct Catalog {
    map: HashMap<String, String>,
}

const ZH: &str = include_str!("../../console/i18n/zh-CN.toml");
const EN: &str = include_str!("../../console/i18n/en.toml");

fn flatten(prefix: &str, t: &toml::Table, out: &mut HashMap<String, String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            toml::Value::Table(inner) => flatten(&key, inner, out),
            // The tests reject other kinds (see `catalogues_hold_only_text`).
            _ => {}
        }
    }
}

impl Catalog {
    fn parse(text: &str) -> Catalog {
        let mut map = HashMap::new();
        // A catalogue that does not parse shows every key as missing, which
        // the tests catch; the binary still serves.
        if let Ok(t) = text.parse::<toml::Table>() {
            flatten("", &t, &mut map);
        }
        Catalog { map }
    }

    /// The text for `key`, or ⟦key⟧.
    pub fn t<'a>(&'a self, key: &str) -> Cow<'a, str> {
        match self.map.get(key) {
            Some(s) => Cow::Borrowed(s.as_str()),
            None => Cow::Owned(format!("⟦{key}⟧")),
        }
    }

    /// The text for `key`, if the catalogue has one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// An event type's code with its name when the catalogue knows it
    /// (11B03 暴雨).
    pub fn event(&self, code: &str) -> String {
        match self.get(&format!("event.{code}")) {
            Some(name) => format!("{code} {name}"),
            None => code.to_string(),
        }
    }

    /// 特别重大 (I) … 一般 (IV); 0 (unknown) too.
    pub fn sev(&self, n: impl std::fmt::Display) -> Cow<'_, str> {
        self.t(&format!("sev.{n}"))
    }

    /// emergency, daily, drill.
    pub fn class(&self, c: impl std::fmt::Display) -> Cow<'_, str> {
        self.t(&format!("class.{c}"))
    }

    /// A broadcast's state: active, pending, cancelled, ended.
    pub fn bstate(&self, s: impl std::fmt::Display) -> Cow<'_, str> {
        self.t(&format!("bstate.{s}"))
    }

    /// A terminal's state (see `view::TermState`).
    pub fn tstate(&self, s: impl std::fmt::Display) -> Cow<'_, str> {
        self.t(&format!("state.{s}"))
    }

    /// A draft's state.
    pub fn dstate(&self, s: impl std::fmt::Display) -> Cow<'_, str> {
        self.t(&format!("dstate.{s}"))
    }

    /// A refusal reason (`RefusalReason::name`); unknown ones as they are.
    pub fn reason(&self, r: impl std::fmt::Display) -> Cow<'_, str> {
        let key = format!("reason.{r}");
        match self.map.get(&key) {
            Some(s) => Cow::Borrowed(s.as_str()),
            None => Cow::Owned(r.to_string()),
        }
    }

    /// A role's name.
    pub fn role(&self, r: impl std::fmt::Display) -> Cow<'_, str> {
        self.t(&format!("role.{r}"))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Texts whose keys start with `prefix.`, for the page's script.
    pub fn section(&self, prefix: &str) -> std::collections::BTreeMap<&str, &str> {
        let p = format!("{prefix}.");
        self.map
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k, v.as_str())))
            .collect()
    }
}

static CATALOGS: LazyLock<[Catalog; 2]> =
    LazyLock::new(|| [Catalog::parse(ZH), Catalog::parse(EN)]);

pub fn catalog(lang: Lang) -> &'static Catalog {
    match lang {
        Lang::Zh => &CATALOGS[0],
        Lang::En => &CATALOGS[1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn catalogues_parse_and_hold_the_same_keys() {
        for text in [ZH, EN] {
            let t: toml::Table = text.parse().expect("catalogue parses");
            fn only_text(t: &toml::Table) {
                for (k, v) in t {
                    match v {
                        toml::Value::String(_) => {}
                        toml::Value::Table(i) => only_text(i),
                        _ => panic!("{k}: catalogue entries are text"),
                    }
                }
            }
            only_text(&t);
        }
        let zh: BTreeSet<&str> = catalog(Lang::Zh).keys().collect();
        let en: BTreeSet<&str> = catalog(Lang::En).keys().collect();
        let only_zh: Vec<_> = zh.difference(&en).collect();
        let only_en: Vec<_> = en.difference(&zh).collect();
        assert!(only_zh.is_empty(), "missing in en.toml: {only_zh:?}");
        assert!(only_en.is_empty(), "missing in zh-CN.toml: {only_en:?}");
    }

    /// Every key a template or the script names is in both catalogues.
    #[test]
    fn every_key_used_is_in_both_catalogues() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
        let mut used = BTreeSet::new();
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.push(concat!(env!("CARGO_MANIFEST_DIR"), "/src/console/pages.rs").into());
        files.push(concat!(env!("CARGO_MANIFEST_DIR"), "/src/console/view.rs").into());
        files.push(concat!(env!("CARGO_MANIFEST_DIR"), "/src/console/programmes.rs").into());
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, _) in text.match_indices("t(\"") {
                let rest = &text[i + 3..];
                let end = rest.find('"').unwrap();
                used.insert(rest[..end].to_string());
            }
        }
        assert!(used.len() > 50, "found only {} keys", used.len());
        for lang in Lang::ALL {
            let missing: Vec<_> = used
                .iter()
                .filter(|k| !catalog(lang).map.contains_key(k.as_str()))
                .collect();
            assert!(missing.is_empty(), "{}: missing {missing:?}", lang.tag());
        }
    }
}
