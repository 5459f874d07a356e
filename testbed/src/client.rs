//! A typed client of a platform's HTTP API, as an operator's script would
//! use it: each call with the token of the person whose job it is (a
//! drafter drafts, an approver approves and cancels, a maintainer sends
//! commands). Every call ends with an answer or an error, never hangs.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use protocol::BroadcastId;

use crate::credentials::Credentials;

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    drafter: String,
    approver: String,
    maintainer: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080`) acting
    /// as the people of `creds`.
    pub fn new(base: impl Into<String>, creds: &Credentials) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        ApiClient {
            base: base.into(),
            drafter: creds.drafter.token.clone(),
            approver: creds.approver.token.clone(),
            maintainer: creds.maintainer.token.clone(),
            http,
        }
    }

    /// A client of platform `p`'s API.
    pub fn of(p: &platform::PlatformHandle, creds: &Credentials) -> anyhow::Result<Self> {
        let addr = p.http_addr.context("the platform has no HTTP API")?;
        Ok(Self::new(format!("http://{addr}"), creds))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The same API with one token for everything (to test refusals).
    pub fn with_token(&self, token: &str) -> Self {
        ApiClient {
            drafter: token.into(),
            approver: token.into(),
            maintainer: token.into(),
            ..self.clone()
        }
    }

    /// Issues a broadcast from `audio` with the form `fields`: the drafter
    /// submits it and, if it waits for review, the approver approves it.
    /// Its broadcast id.
    pub async fn issue(
        &self,
        audio: &Path,
        fields: &[(&str, String)],
    ) -> anyhow::Result<BroadcastId> {
        Ok(self.issue_timed(audio, fields).await?.0)
    }

    /// As `issue`, with when the publishing request left (unix ms): the
    /// approval's, or the submit's of what needs none (P1 counts from it).
    pub async fn issue_timed(
        &self,
        audio: &Path,
        fields: &[(&str, String)],
    ) -> anyhow::Result<(BroadcastId, i64)> {
        let mut published_ms = certs::time::unix_now_ms();
        let (status, body) = self.issue_form(audio, fields).await?;
        anyhow::ensure!(
            status.is_success(),
            "issue refused ({status}): {}",
            body["message"]
        );
        if status == reqwest::StatusCode::ACCEPTED {
            let draft = body["draft"]["id"].as_u64().context("no draft id")?;
            published_ms = certs::time::unix_now_ms();
            let approved = self.approve(draft, "同意").await?;
            let id = approved["broadcast"]
                .as_str()
                .context("approved but not published")?
                .parse()?;
            return Ok((id, published_ms));
        }
        let id = body["id"]
            .as_str()
            .context("no id in the answer")?
            .parse()?;
        Ok((id, published_ms))
    }

    /// Posts the issue form as the drafter; the API's status and answer as
    /// they are.
    pub async fn issue_form(
        &self,
        audio: &Path,
        fields: &[(&str, String)],
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let form = form(audio, fields)?;
        let resp = self
            .http
            .post(format!("{}/api/broadcasts", self.base))
            .bearer_auth(&self.drafter)
            .multipart(form)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    /// Approves draft `id` as the approver; the draft as the API answers.
    pub async fn approve(&self, id: u64, comment: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .http
            .post(format!("{}/api/drafts/{id}/approve", self.base))
            .bearer_auth(&self.approver)
            .json(&serde_json::json!({ "comment": comment }))
            .send()
            .await?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await?;
        anyhow::ensure!(
            status.is_success(),
            "approve refused ({status}): {}",
            v["message"]
        );
        Ok(v)
    }

    /// Cancels broadcast `id` everywhere (as the approver).
    pub async fn cancel(&self, id: BroadcastId) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/api/broadcasts/{id}/cancel", self.base))
            .bearer_auth(&self.approver)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "cancel refused: {}",
            resp.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Sends a remote command (the JSON body the API takes) as the
    /// maintainer; its id.
    pub async fn command(&self, body: serde_json::Value) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}/api/commands", self.base))
            .bearer_auth(&self.maintainer)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await?;
        anyhow::ensure!(
            status.is_success(),
            "command refused ({status}): {}",
            v["message"]
        );
        v["command_id"]
            .as_str()
            .map(str::to_string)
            .context("no command id")
    }

    /// Drafts and submits a scheduled programme with the form `fields`
    /// (`schedule`, `times`...), from `audio`, or spoken from its text when
    /// `spoken`; a daily programme needs no approval by default, else the
    /// approver approves it. Its programme id.
    pub async fn schedule(
        &self,
        audio: &Path,
        fields: &[(&str, String)],
        spoken: bool,
    ) -> anyhow::Result<String> {
        let mut form = if spoken {
            let mut f = reqwest::multipart::Form::new();
            for (k, v) in fields {
                f = f.text(k.to_string(), v.clone());
            }
            f
        } else {
            self::form(audio, fields)?
        };
        form = form.text("submit", "true");
        let resp = self
            .http
            .post(format!("{}/api/drafts", self.base))
            .bearer_auth(&self.drafter)
            .multipart(form)
            .send()
            .await?;
        let status = resp.status();
        let mut body: serde_json::Value = resp.json().await?;
        anyhow::ensure!(
            status.is_success(),
            "programme refused ({status}): {}",
            body["message"]
        );
        if body["state"] == "submitted" {
            let id = body["id"].as_u64().context("no draft id")?;
            body = self.approve(id, "同意").await?;
        }
        body["broadcast"]
            .as_str()
            .map(String::from)
            .context("the programme was not published")
    }

    /// Sets quiet hours for `area` as the approver.
    pub async fn set_quiet_hours(
        &self,
        area: &str,
        mode: &str,
        windows: &[&str],
    ) -> anyhow::Result<()> {
        let resp = self
            .http
            .put(format!("{}/api/quiet-hours", self.base))
            .bearer_auth(&self.approver)
            .json(&serde_json::json!({ "areas": [area], "mode": mode, "windows": windows }))
            .send()
            .await?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "quiet hours refused ({status})");
        Ok(())
    }

    /// GET `path` as JSON (as the maintainer).
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.maintainer)
            .send()
            .await?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "GET {path}: {status}");
        Ok(resp.json().await?)
    }

    /// GET `path` as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.maintainer)
            .send()
            .await?;
        Ok(resp.text().await?)
    }

    /// POST a JSON or text `body` to `path` as the maintainer; the answer.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.maintainer)
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or_default()))
    }
}

/// The multipart draft form: `fields` and the audio file.
pub fn form(audio: &Path, fields: &[(&str, String)]) -> anyhow::Result<reqwest::multipart::Form> {
    let bytes = std::fs::read(audio).with_context(|| format!("reading {}", audio.display()))?;
    let name = audio
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("audio.wav")
        .to_string();
    let mut form = reqwest::multipart::Form::new().part(
        "audio",
        reqwest::multipart::Part::bytes(bytes).file_name(name),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.clone());
    }
    Ok(form)
}
