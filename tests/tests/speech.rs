//! Typed text spoken (R6, issue 15): the operator hears the speech before
//! drafting, drafts an emergency from its text alone, a second person
//! approves, and the terminals play exactly what was previewed (PCM
//! compared). Needs espeak-ng; `EBS_TTS_TESTS=1` (CI) makes its absence a
//! failure. A platform without a voice says so, naming the field.

use std::time::Duration;

use certs::pki::Layout;
use serde_json::json;
use testbed::{LocalDistrict, LocalOptions};
use tests::*;

fn wav_pcm(bytes: &[u8]) -> Vec<f32> {
    tts::wav_to_pcm(bytes).expect("a WAV file").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_alert_is_heard_before_drafting_and_then_played_at_the_terminals() {
    if !voice_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut district = small_district(dir.path(), Layout::ONE_OF_EACH).await;
    let api = district.district_api();
    let c = district.creds.clone();
    let text =
        "区应急管理局2026年12月1日14:30发布：预计未来3小时降雨量将达100毫米，请沿河居民立即转移。";

    let preview = api
        .http()
        .post(format!("{}/api/speech/preview", api.base()))
        .bearer_auth(&c.drafter.token)
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(preview.status().as_u16(), 200);
    let pinyin = preview.headers()["x-pinyin"].to_str().unwrap().to_string();
    assert!(
        pinyin.starts_with("qu1 ying4 ji2 guan3 li3 ju2 er4 ling2 er4 liu4 nian2")
            && pinyin.contains("shi2 si4 dian3 san1 shi2 fen1")
            && pinyin.contains("jiang4 yu3 liang4")
            && pinyin.contains("yi1 bai3 hao2 mi3")
            && pinyin.contains("zhuan3 yi2"),
        "{pinyin}"
    );
    let heard = wav_pcm(&preview.bytes().await.unwrap());
    assert!(heard.len() > 16_000 * 5, "{} samples", heard.len());

    // Drafted from the text alone, approved by a second person.
    let county = district.district.relay.scope[0].to_string();
    let form = reqwest::multipart::Form::new()
        .text("areas", county)
        .text("class", "emergency")
        .text("severity", "2")
        .text("title", "暴雨转移通知")
        .text("text", text)
        .text("speak", "true")
        .text("submit", "true");
    let (status, d) = answer(
        api.http()
            .post(format!("{}/api/drafts", api.base()))
            .bearer_auth(&c.drafter.token)
            .multipart(form),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(
        d["state"], "submitted",
        "an emergency waits for approval: {d}"
    );
    assert_eq!(
        d["audio"]["spoken"],
        pinyin.as_str(),
        "what was read is on the draft"
    );
    let id = d["id"].as_u64().unwrap();
    let approved = api.approve(id, "核对无误").await.unwrap();
    let broadcast: protocol::BroadcastId = approved["broadcast"].as_str().unwrap().parse().unwrap();
    assert!(
        district
            .all_finished(broadcast, Duration::from_secs(60))
            .await
    );
    let played = played_wavs(&mut district).await;
    let (path, pcm) = &played[0];
    let corr = correlation(&heard, pcm, 40_000);
    assert!(
        corr > 0.9,
        "{}: correlation {corr} with the preview",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_without_a_voice_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = LocalOptions::wav(Layout::ONE_OF_EACH, dir.path());
    opts.configure = Box::new(|_, c| c.tts.program = "/nonexistent/espeak-ng".into());
    let district = LocalDistrict::start(opts).await.unwrap();
    let api = district.district_api();
    let (status, e) = answer(
        api.http()
            .post(format!("{}/api/speech/preview", api.base()))
            .bearer_auth(&district.creds.drafter.token)
            .json(&json!({ "text": "测试" })),
    )
    .await;
    assert_eq!((status, e["field"].as_str()), (400, Some("speak")), "{e}");
    assert!(
        e["message_zh"].as_str().unwrap().contains("语音合成"),
        "{e}"
    );
}
