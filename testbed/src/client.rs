//! A typed client of a platform's HTTP API, as an operator's script would
//! use it. Every call ends with an answer or an error, never hangs.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use protocol::BroadcastId;

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        ApiClient {
            base: base.into(),
            token: token.into(),
            http,
        }
    }

    /// A client of platform `p`'s API.
    pub fn of(p: &platform::PlatformHandle, token: &str) -> anyhow::Result<Self> {
        let addr = p.http_addr.context("the platform has no HTTP API")?;
        Ok(Self::new(format!("http://{addr}"), token))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same API with another token (to test refusals).
    pub fn with_token(&self, token: &str) -> Self {
        ApiClient {
            token: token.into(),
            ..self.clone()
        }
    }

    /// Issues a broadcast from `audio` with the form `fields`; its id.
    pub async fn issue(
        &self,
        audio: &Path,
        fields: &[(&str, String)],
    ) -> anyhow::Result<BroadcastId> {
        let (status, body) = self.issue_form(audio, fields).await?;
        anyhow::ensure!(
            status.is_success(),
            "issue refused ({status}): {}",
            body["error"]
        );
        Ok(body["id"]
            .as_str()
            .context("no id in the answer")?
            .parse()?)
    }

    /// Posts the issue form; the API's status and answer as they are.
    pub async fn issue_form(
        &self,
        audio: &Path,
        fields: &[(&str, String)],
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
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
        let resp = self
            .http
            .post(format!("{}/api/broadcasts", self.base))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    /// Cancels broadcast `id` everywhere.
    pub async fn cancel(&self, id: BroadcastId) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/api/broadcasts/{id}/cancel", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "cancel refused: {}",
            resp.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Sends a remote command (the JSON body the API takes); its id.
    pub async fn command(&self, body: serde_json::Value) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}/api/commands", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await?;
        anyhow::ensure!(
            status.is_success(),
            "command refused ({status}): {}",
            v["error"]
        );
        v["command_id"]
            .as_str()
            .map(str::to_string)
            .context("no command id")
    }

    /// GET `path` as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "GET {path}: {status}");
        Ok(resp.json().await?)
    }

    /// GET `path` as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
        Ok(resp.text().await?)
    }

    /// POST a JSON or text `body` to `path` with the token; the answer.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or_default()))
    }
}
