//! Renders the attack suite's JSON results (written with ATTACK_REPORT_DIR
//! set) as the table of docs/security.md, between its markers.
//!
//! `attack-report <results dir> <security.md>`

use std::path::Path;

const BEGIN: &str = "<!-- attack-table:begin -->";
const END: &str = "<!-- attack-table:end -->";

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn observed(r: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    for o in r["observed"].as_array().into_iter().flatten() {
        let counted = &o["counted"];
        let mut at: Vec<String> = Vec::new();
        for group in ["terminals", "platforms"] {
            for pair in counted[group].as_array().into_iter().flatten() {
                at.push(format!("{} {}", pair[0].as_str().unwrap_or("?"), pair[1]));
            }
        }
        parts.push(format!(
            "`{}` counted at {}; district API shows {}",
            o["reason"].as_str().unwrap_or("?"),
            if at.is_empty() {
                "nowhere".into()
            } else {
                at.join(", ")
            },
            o["district_total"]
        ));
    }
    let sinks = r["sinks"].as_array().map_or(0, Vec::len);
    let whole = r["sinks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["genuine_finished"] == true)
        .count();
    let min_corr = r["sinks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["genuine_correlation"].as_f64())
        .fold(1.0f64, f64::min);
    if sinks > 0 {
        parts.push(format!(
            "sinks with any attack audio: {}; genuine alert whole on {whole}/{sinks} (correlation ≥ {min_corr:.3})",
            r["attack_samples"]
        ));
    }
    if let Some(note) = r["note"].as_str() {
        parts.push(cell(note));
    }
    parts.join("<br>")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 3,
        "usage: attack-report <results dir> <security.md>"
    );
    let mut results = Vec::new();
    for entry in std::fs::read_dir(&args[1])? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            results.push(v);
        }
    }
    results.sort_by_key(|r| r["n"].as_u64().unwrap_or(0));
    let mut table = String::from(
        "| # | attack | what it tries | expected | observed (last run) | |\n|---|---|---|---|---|---|\n",
    );
    for r in &results {
        let expected: Vec<String> = r["expected"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("`{}`", e.as_str().unwrap_or("?")))
            .collect();
        table.push_str(&format!(
            "| {} | {} | {} | refused: {}; nothing played | {} | {} |\n",
            r["n"],
            cell(r["name"].as_str().unwrap_or("")),
            cell(r["tries"].as_str().unwrap_or("")),
            expected.join(", "),
            observed(r),
            if r["passed"] == true {
                "pass"
            } else {
                "**FAIL**"
            }
        ));
    }
    let doc_path = Path::new(&args[2]);
    let doc = std::fs::read_to_string(doc_path)?;
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        anyhow::bail!("{} has no {BEGIN} … {END} markers", doc_path.display());
    };
    let stamp = format!(
        "Last run: {} ({} attacks).\n\n",
        certs::time::format_local(certs::time::unix_now()),
        results.len()
    );
    let updated = format!("{}{BEGIN}\n{stamp}{table}{}", &doc[..b], &doc[e..]);
    std::fs::write(doc_path, updated)?;
    println!("{} rows written to {}", results.len(), doc_path.display());
    Ok(())
}
