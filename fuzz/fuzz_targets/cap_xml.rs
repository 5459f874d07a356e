//! A CAP 1.2 document: checked, mapped to the one alert the platform acts
//! on; an alert written from it reads back.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cap) = gateway::cap::CapAlert::parse(data) else {
        return;
    };
    let Ok(alert) = gateway::Alert::from_cap(&cap) else {
        return;
    };
    // What the platform writes comes from its own broadcasts: text within
    // the header's limit, times within its years.
    let years = 946_684_800_000..4_102_444_800_000;
    if alert.text.len() > 8192 || !years.contains(&cap.sent_ms) {
        return;
    }
    let areas: Vec<(String, String)> = alert
        .area_codes
        .iter()
        .map(|a| (a.clone(), a.clone()))
        .collect();
    let out = gateway::cap::Outgoing {
        identifier: &alert.id,
        sender: &alert.sender,
        sender_name: &alert.sender_name,
        sent_ms: cap.sent_ms,
        drill: alert.drill,
        cancels: None,
        event_type: &alert.event_type,
        event: &alert.event,
        severity: alert.severity,
        start_ms: cap.sent_ms,
        end_ms: cap.sent_ms,
        headline: &alert.title,
        description: &alert.text,
        areas: &areas,
    };
    if let Err(e) = gateway::cap::CapAlert::parse(out.document().as_bytes()) {
        panic!("our own CAP does not read back: {e}");
    }
});
