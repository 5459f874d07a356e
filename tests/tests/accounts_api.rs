//! The API as a hostile user sees it: sessions (CSRF, fixation, logout,
//! locks, deletion), brute force, an account of another platform, the
//! one-time setup code; and bad requests, each answered with a JSON error
//! that names the field and the limit before any body or audio is read.

use std::io::{Read, Write};
use std::time::Duration;

use certs::pki::{DistrictPki, Layout};
use serde_json::{json, Value};
use testbed::node::{platform_config, provision, start_platform};

struct Node {
    _dir: tempfile::TempDir,
    base: String,
    creds: testbed::Credentials,
    platform: platform::PlatformHandle,
}

/// A district platform with an API (and, unless `accounts` is false, the
/// test accounts); `max_upload_mb` bounds uploads.
async fn district(accounts: bool, max_upload_mb: u64) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let now = certs::time::unix_now();
    let pki = DistrictPki::generate(Layout::ONE_OF_EACH, (now - 60, now + 86_400), now).unwrap();
    let mut config = platform_config(dir.path(), "district", vec![]);
    config.max_upload_mb = max_upload_mb;
    let bundle = provision(dir.path(), &pki.root, &pki.district, "district", now).unwrap();
    let creds = testbed::Credentials::generate().unwrap();
    let platform = if accounts {
        start_platform(config, bundle, &creds, true).await.unwrap()
    } else {
        platform::Platform::new(config, bundle)
            .unwrap()
            .start(platform::Listeners::loopback(true).await.unwrap())
            .await
            .unwrap()
    };
    Node {
        base: format!("http://{}", platform.http_addr.unwrap()),
        _dir: dir,
        creds,
        platform,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Logs in; (status, answer, session cookie value).
async fn login(
    base: &str,
    name: &str,
    password: &str,
    planted: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut r = client()
        .post(format!("{base}/api/login"))
        .json(&json!({"name": name, "password": password}));
    if let Some(p) = planted {
        r = r.header("cookie", format!("ebs_session={p}"));
    }
    let resp = r.send().await.unwrap();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(c) = &cookie {
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
    }
    let value = cookie.and_then(|c| {
        c.split(';')
            .next()
            .and_then(|kv| kv.strip_prefix("ebs_session="))
            .map(str::to_string)
    });
    let (status, body) = json_of(resp).await;
    (status, body, value)
}

fn with_cookie(r: reqwest::RequestBuilder, session: &str) -> reqwest::RequestBuilder {
    r.header("cookie", format!("ebs_session={session}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_locks_brute_force_and_foreign_accounts_are_refused() {
    let n = district(true, 10).await;
    let (base, c) = (&n.base, &n.creds);
    let http = client();

    // A session for the approver: the cookie, and a CSRF token to send back.
    let (status, who, session) = login(base, "approver", &c.approver.password, None).await;
    assert_eq!(status, 200, "{who}");
    let session = session.expect("a session cookie");
    let csrf = who["csrf"].as_str().unwrap().to_string();
    let (status, me) = tests::answer(with_cookie(
        http.get(format!("{base}/api/session")),
        &session,
    ))
    .await;
    assert_eq!(
        (status, me["name"].as_str()),
        (200, Some("approver")),
        "{me}"
    );
    assert_eq!(me["csrf"], csrf.as_str());
    // A change without the CSRF token, or with a wrong one, is refused.
    let approve = format!("{base}/api/drafts/1/approve");
    let (status, e) = tests::answer(with_cookie(http.post(&approve), &session)).await;
    assert_eq!((status, e["error"].as_str()), (403, Some("csrf")), "{e}");
    let (status, _) = tests::answer(
        with_cookie(http.post(&approve), &session).header("x-csrf-token", "0".repeat(64)),
    )
    .await;
    assert_eq!(status, 403);
    let (status, e) =
        tests::answer(with_cookie(http.post(&approve), &session).header("x-csrf-token", &csrf))
            .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (404, Some("not_found")),
        "past CSRF: {e}"
    );

    // Session fixation: a planted id is never taken over.
    let planted = "ab".repeat(32);
    let (status, _, fresh) = login(base, "approver", &c.approver.password, Some(&planted)).await;
    assert_eq!(status, 200);
    let fresh = fresh.unwrap();
    assert_ne!(fresh, planted);
    let (status, _) = tests::answer(with_cookie(
        http.get(format!("{base}/api/session")),
        &planted,
    ))
    .await;
    assert_eq!(status, 401);
    // Logout ends the session at once.
    let (status, _) = tests::answer(
        with_cookie(http.post(format!("{base}/api/logout")), &fresh)
            .header("x-csrf-token", "wrong"),
    )
    .await;
    assert_eq!(status, 403, "logout needs CSRF too");
    let (_, me) = tests::answer(with_cookie(http.get(format!("{base}/api/session")), &fresh)).await;
    let fresh_csrf = me["csrf"].as_str().unwrap().to_string();
    let r = with_cookie(http.post(format!("{base}/api/logout")), &fresh)
        .header("x-csrf-token", &fresh_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) =
        tests::answer(with_cookie(http.get(format!("{base}/api/session")), &fresh)).await;
    assert_eq!(status, 401, "a logged-out session is refused");

    // An admin locks the drafter: its session and its token fail at once.
    let (_, _, drafter_session) = login(base, "drafter", &c.drafter.password, None).await;
    let drafter_session = drafter_session.unwrap();
    let patch = |locked: bool| {
        http.patch(format!("{base}/api/accounts/drafter"))
            .bearer_auth(&c.admin.token)
            .json(&json!({"locked": locked}))
            .send()
    };
    assert_eq!(patch(true).await.unwrap().status(), 200);
    let (status, _) = tests::answer(with_cookie(
        http.get(format!("{base}/api/session")),
        &drafter_session,
    ))
    .await;
    assert_eq!(status, 401, "a locked account's session is refused");
    let (status, _) = tests::answer(
        http.get(format!("{base}/api/session"))
            .bearer_auth(&c.drafter.token),
    )
    .await;
    assert_eq!(status, 401, "a locked account's token is refused");
    let (status, e, _) = login(base, "drafter", &c.drafter.password, None).await;
    assert_eq!((status, e["error"].as_str()), (423, Some("locked")), "{e}");
    assert_eq!(patch(false).await.unwrap().status(), 200);
    let (status, _) = tests::answer(
        http.get(format!("{base}/api/session"))
            .bearer_auth(&c.drafter.token),
    )
    .await;
    assert_eq!(status, 200, "unlocked, the token works again");

    // Brute force: five wrong passwords lock the account, the right one too then.
    for i in 0..5 {
        let (status, e, cookie) = login(base, "maintainer", "not the password", None).await;
        assert!(cookie.is_none());
        let expected = if i < 4 {
            (401, "wrong_credentials")
        } else {
            (423, "locked")
        };
        assert_eq!(
            (status, e["error"].as_str().unwrap()),
            expected,
            "attempt {i}: {e}"
        );
    }
    let (status, e, _) = login(base, "maintainer", &c.maintainer.password, None).await;
    assert_eq!(status, 423, "{e}");
    assert!(e["message_zh"].as_str().unwrap().contains("锁定"), "{e}");
    // An unknown name answers like a wrong password.
    let (status, e, _) = login(base, "nobody", "whatever it is", None).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (401, Some("wrong_credentials"))
    );

    // A deleted account's token is refused.
    let r = http
        .delete(format!("{base}/api/accounts/auditor"))
        .bearer_auth(&c.admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = tests::answer(
        http.get(format!("{base}/api/session"))
            .bearer_auth(&c.auditor.token),
    )
    .await;
    assert_eq!(status, 401);

    // An account of another platform is refused here.
    let other = district(true, 10).await;
    let (status, _) = tests::answer(
        http.get(format!("{base}/api/session"))
            .bearer_auth(&other.creds.approver.token),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = login(base, "approver", &other.creds.approver.password, None).await;
    assert_eq!(status, 401);

    // All of it is in the trail.
    let trail = n.platform.workflow.audit.latest(500).unwrap();
    let count = |action: &str| trail.iter().filter(|e| e.action == action).count();
    assert!(count("login") >= 3, "{trail:?}");
    assert!(count("login.failed") >= 6);
    assert_eq!(count("account.locked"), 1);
    assert!(count("logout") >= 1);
    assert_eq!(count("account.change"), 2);
    assert_eq!(count("account.delete"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_comes_from_the_one_time_setup_code() {
    let n = district(false, 10).await;
    let code = n
        .platform
        .setup_code
        .clone()
        .expect("no account: a setup code");
    let http = client();
    let setup = |code: String| {
        http.post(format!("{}/api/setup", n.base))
            .json(&json!({"code": code, "name": "admin", "display_name": "管理员", "password": "the first admin's password"}))
            .send()
    };
    let (status, _) = json_of(setup("0000-0000-0000".into()).await.unwrap()).await;
    assert_eq!(status, 403);
    let (status, a) = json_of(setup(code.clone()).await.unwrap()).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["roles"], json!(["admin"]));
    let (status, _) = json_of(setup(code).await.unwrap()).await;
    assert_eq!(status, 403, "the code works once");
    let (status, _, cookie) = login(&n.base, "admin", "the first admin's password", None).await;
    assert_eq!(status, 200);
    assert!(cookie.is_some());
    // Nothing but health, login, setup and the API document is open.
    for path in [
        "/api/status",
        "/api/broadcasts",
        "/api/terminals",
        "/metrics",
        "/api/audit",
    ] {
        let r = http.get(format!("{}{path}", n.base)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let doc: Value = http
        .get(format!("{}/api/openapi.json", n.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["paths"]["/api/drafts/{id}/approve"]["post"].is_object());
}

/// Sends `head` on a raw connection and returns what comes back within `wait`.
fn raw(addr: std::net::SocketAddr, head: &str, wait: Duration) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_json_error_naming_the_field_before_anything_is_read() {
    let n = district(true, 1).await;
    let (base, c) = (n.base.clone(), &n.creds);
    let addr = n.platform.http_addr.unwrap();
    let http = client();

    // Unauthenticated, a 150 MB body is refused on its headers alone.
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            "POST /api/revocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 157286400\r\n\r\n",
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"error\":\"unauthorized\""), "{answer}");

    // Headers that never finish: the connection is dropped.
    let started = std::time::Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            "POST /api/login HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "a half-sent request was held for {:?}: {answer}",
        started.elapsed()
    );

    // JSON too large, of the wrong type, malformed; an unknown path.
    let big = json!({"areas": ["x".repeat(100_000)], "action": "mute"});
    let (status, e) = tests::answer(
        http.post(format!("{base}/api/commands"))
            .bearer_auth(&c.maintainer.token)
            .json(&big),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (413, Some("too_large")),
        "{e}"
    );
    let (status, e) = tests::answer(
        http.post(format!("{base}/api/commands"))
            .bearer_auth(&c.maintainer.token)
            .body("mute"),
    )
    .await;
    assert_eq!(status, 415, "{e}");
    assert!(
        e["message"].is_string() && e["message_zh"].is_string(),
        "{e}"
    );
    let (status, e) = tests::answer(
        http.post(format!("{base}/api/commands"))
            .bearer_auth(&c.maintainer.token)
            .header("content-type", "application/json")
            .body("{\"action\": "),
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid")), "{e}");
    let (status, e) = tests::answer(http.get(format!("{base}/api/nothing-here"))).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );

    // Form fields are checked before the audio: garbage audio, bad severity.
    let garbage = n._dir.path().join("损坏的文件.mp3");
    std::fs::write(&garbage, vec![0x55u8; 50_000]).unwrap();
    let area = n.platform.relay.scope[0].to_string();
    let api = testbed::ApiClient::of(&n.platform, c).unwrap();
    let form = |k: &'static str, v: &str| {
        let mut f = vec![
            ("areas", area.clone()),
            ("class", "emergency".to_string()),
            ("severity", "1".to_string()),
            ("title", "检查".to_string()),
        ];
        f.retain(|(n, _)| *n != k);
        f.push((k, v.to_string()));
        f
    };
    for bad in ["-1", "abc", "1.5", ""] {
        let (status, e) = api
            .issue_form(&garbage, &form("severity", bad))
            .await
            .unwrap();
        assert_eq!(
            (status.as_u16(), e["field"].as_str()),
            (400, Some("severity")),
            "{bad:?}: {e}"
        );
    }
    for bad in ["0", "-5", "x"] {
        let (status, e) = api
            .issue_form(&garbage, &form("valid_minutes", bad))
            .await
            .unwrap();
        assert_eq!(
            (status.as_u16(), e["field"].as_str()),
            (400, Some("valid_minutes")),
            "{bad:?}: {e}"
        );
    }
    let (status, e) = api
        .issue_form(&garbage, &form("title", &"标".repeat(100)))
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), e["field"].as_str()),
        (400, Some("title")),
        "{e}"
    );
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("300 bytes") && m.contains("256") && m.contains("85 Chinese characters"),
        "{m}"
    );
    // The audio's error names the uploaded file, not a temporary one.
    let (status, e) = api
        .issue_form(&garbage, &form("title", "检查"))
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), e["field"].as_str()),
        (400, Some("audio")),
        "{e}"
    );
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("损坏的文件.mp3") && !m.contains("ebs-upload"),
        "{m}"
    );
    // Over the upload limit (1 MB here): too large, and the limit said.
    let huge = n._dir.path().join("huge.wav");
    std::fs::write(&huge, vec![0u8; 3 * 1024 * 1024]).unwrap();
    let (status, e) = api.issue_form(&huge, &form("title", "检查")).await.unwrap();
    assert_eq!(status.as_u16(), 413, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("too large, the limit is 1 MB"),
        "{e}"
    );
    // Nothing refused was kept.
    assert!(n
        .platform
        .workflow
        .drafts
        .list(None, 100)
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_draft_with_a_start_time_is_published_at_that_time() {
    let n = district(true, 10).await;
    let c = &n.creds;
    let clip = n._dir.path().join("tone.wav");
    tests::clip("alert-zh.wav", 2.0, &clip);
    let start = platform::now_ms() + 3_000;
    let fields = vec![
        ("areas", n.platform.relay.scope[0].to_string()),
        ("class", "emergency".to_string()),
        ("severity", "3".to_string()),
        ("title", "定时预警".to_string()),
        ("start_at_ms", start.to_string()),
        ("submit", "true".to_string()),
    ];
    let http = client();
    let form = testbed::client::form(&clip, &fields).unwrap();
    let (status, d) = tests::answer(
        http.post(format!("{}/api/drafts", n.base))
            .bearer_auth(&c.drafter.token)
            .multipart(form),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    let id = d["id"].as_u64().unwrap();
    let (status, d) = tests::answer(
        http.post(format!("{}/api/drafts/{id}/approve", n.base))
            .bearer_auth(&c.approver.token),
    )
    .await;
    assert_eq!(
        (status, d["state"].as_str()),
        (200, Some("approved")),
        "{d}"
    );
    assert!(
        n.platform.relay.broadcasts.all().is_empty(),
        "not before its start"
    );
    let published = tests::eventually(Duration::from_secs(10), || {
        !n.platform.relay.broadcasts.all().is_empty()
    })
    .await;
    assert!(published, "published at its start time");
    let b = n.platform.relay.broadcasts.all()[0].clone();
    assert!(
        b.header.header().issued_at_ms >= start,
        "signed at its start, not before"
    );
    let d = n.platform.workflow.drafts.get(id).unwrap().unwrap();
    assert_eq!(d.state, platform::drafts::DraftState::Published);
    assert_eq!(d.broadcast_id(), Some(b.id()));
}
