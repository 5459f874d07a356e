//! Prometheus metrics at /metrics, rendered from the platform's state at
//! scrape time (text exposition format 0.0.4).

use std::fmt::Write;
use std::time::Duration;

use crate::now_ms;
use crate::relay::Relay;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub fn render(
    relay: &Relay,
    expiry_warning: Duration,
    offline_after_ms: i64,
    lead_ms: i64,
) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "ebs_refusals_total",
        "counter",
        "Messages this platform's verifier refused, by reason.",
    );
    for (reason, n) in relay.refusals().iter() {
        let _ = writeln!(
            out,
            "ebs_refusals_total{{reason=\"{}\"}} {n}",
            reason.name()
        );
    }
    family(
        &mut out,
        "ebs_security_events_refusals_total",
        "counter",
        "Refusals reported to this platform as security events (its own and from below), by reason.",
    );
    let (refusals, terminals) = {
        let book = relay.book();
        (
            book.refusals.clone(),
            book.terminals(now_ms(), offline_after_ms),
        )
    };
    for (reason, n) in &refusals {
        let _ = writeln!(
            out,
            "ebs_security_events_refusals_total{{reason=\"{}\"}} {n}",
            reason.name()
        );
    }
    let lead = relay.book().lead.lead(lead_ms);
    family(
        &mut out,
        "ebs_lead_milliseconds",
        "gauge",
        "From signing the next broadcast to its first presentation (measured from the tree, at most lead_ms).",
    );
    let _ = writeln!(out, "ebs_lead_milliseconds {}", lead.lead_ms);
    family(
        &mut out,
        "ebs_slowest_arrival_milliseconds",
        "gauge",
        "The slowest terminal's acknowledged arrival of this platform's recent broadcasts (-1: nothing measured yet).",
    );
    let _ = writeln!(
        out,
        "ebs_slowest_arrival_milliseconds {}",
        lead.measured_ms.unwrap_or(-1)
    );
    // The tree's time as this platform serves it to its children.
    let clock = relay.clock.estimate();
    family(
        &mut out,
        "ebs_clock_synced",
        "gauge",
        "1 when this platform serves the tree's time (the top of the tree, or measured against its parent).",
    );
    let _ = writeln!(out, "ebs_clock_synced {}", clock.synced as u8);
    family(
        &mut out,
        "ebs_clock_offset_microseconds",
        "gauge",
        "The tree's time minus this platform's own clock, as measured against its parent.",
    );
    let _ = writeln!(
        out,
        "ebs_clock_offset_microseconds {}",
        clock.offset_at(clock.at_local_us)
    );
    family(
        &mut out,
        "ebs_clock_uncertainty_microseconds",
        "gauge",
        "Standard error of that offset.",
    );
    let _ = writeln!(
        out,
        "ebs_clock_uncertainty_microseconds {}",
        clock.uncertainty_us
    );
    family(
        &mut out,
        "ebs_certificate_expiry_seconds",
        "gauge",
        "Seconds until each certificate of this platform's chain expires (negative: expired).",
    );
    let certs = crate::expiry::chain_expiry(relay, certs::time::unix_now(), expiry_warning);
    for c in &certs {
        let _ = writeln!(
            out,
            "ebs_certificate_expiry_seconds{{serial=\"{}\",tier=\"{}\"}} {}",
            c.serial, c.tier, c.seconds_left
        );
    }
    family(
        &mut out,
        "ebs_certificate_expiry_warning",
        "gauge",
        "1 when a certificate of the chain is within the warning period or expired.",
    );
    for c in &certs {
        let _ = writeln!(
            out,
            "ebs_certificate_expiry_warning{{serial=\"{}\",tier=\"{}\"}} {}",
            c.serial, c.tier, c.warning as u8
        );
    }
    family(
        &mut out,
        "ebs_revocation_list_number",
        "gauge",
        "Number of the revocation list in force, by signer.",
    );
    for (signer, number) in relay.revocations.numbers() {
        let _ = writeln!(
            out,
            "ebs_revocation_list_number{{signer=\"{signer:016x}\"}} {number}"
        );
    }
    family(
        &mut out,
        "ebs_broadcasts_current",
        "gauge",
        "Broadcasts held that have not ended.",
    );
    let _ = writeln!(
        out,
        "ebs_broadcasts_current {}",
        relay.broadcasts.current(now_ms()).len()
    );
    family(
        &mut out,
        "ebs_terminals",
        "gauge",
        "Terminals known to this platform, by state.",
    );
    family(
        &mut out,
        "ebs_terminal_audio_frames_total",
        "counter",
        "Audio frames of the terminals below (as their latest status says), by how they were made: played (decoded), recovered (FEC), concealed, late (skipped), heard (gain above zero).",
    );
    let mut audio = crate::book::AudioRow::default();
    let mut refused: std::collections::BTreeMap<&str, u64> = Default::default();
    for t in &terminals {
        audio.played += t.audio.played;
        audio.recovered += t.audio.recovered;
        audio.concealed += t.audio.concealed;
        audio.late += t.audio.late;
        audio.heard += t.audio.heard;
        for (reason, n) in &t.refusals_by_reason {
            *refused.entry(reason.as_str()).or_default() += u64::from(*n);
        }
    }
    for (kind, n) in [
        ("played", audio.played),
        ("recovered", audio.recovered),
        ("concealed", audio.concealed),
        ("late", audio.late),
        ("heard", audio.heard),
    ] {
        let _ = writeln!(
            out,
            "ebs_terminal_audio_frames_total{{kind=\"{kind}\"}} {n}"
        );
    }
    family(
        &mut out,
        "ebs_terminal_refusals_total",
        "counter",
        "Refusals counted by the terminals below (as their latest status says), by reason.",
    );
    for (reason, n) in &refused {
        let _ = writeln!(
            out,
            "ebs_terminal_refusals_total{{reason=\"{reason}\"}} {n}"
        );
    }
    family(
        &mut out,
        "ebs_handshakes_total",
        "counter",
        "Connection attempts on the QUIC port, by what was decided and how accepted handshakes ended: accepted, retried (asked to prove the address), refused_full, refused_source, dropped_busy, dropped_failing (a source whose handshakes failed, over its budget), linked, failed, timed_out.",
    );
    for (outcome, n) in relay.admission.totals() {
        let _ = writeln!(out, "ebs_handshakes_total{{outcome=\"{outcome}\"}} {n}");
    }
    family(
        &mut out,
        "ebs_links",
        "gauge",
        "Links on the QUIC port: handshaking, linked.",
    );
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        out,
        "ebs_links{{state=\"handshaking\"}} {}",
        load(&relay.admission.handshaking)
    );
    let _ = writeln!(
        out,
        "ebs_links{{state=\"linked\"}} {}",
        load(&relay.admission.links)
    );
    let online = terminals.iter().filter(|t| t.online).count();
    let _ = writeln!(out, "ebs_terminals{{state=\"online\"}} {online}");
    let _ = writeln!(
        out,
        "ebs_terminals{{state=\"offline\"}} {}",
        terminals.len() - online
    );
    out
}
