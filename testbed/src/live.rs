//! A live-voice client of a platform's WebSocket (`/api/live`), as a
//! script or the console's push-to-talk would use it: open with the
//! broadcast's fields, stream 20 ms of PCM at a time, end.

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct LiveClient {
    socket: Socket,
}

impl LiveClient {
    /// Opens a live broadcast at the API `base` (`http://…`) with `token`;
    /// `open` is the open message (fields, `format`, `approver`). The
    /// platform's answer: `{"state":"on_air",…}`, or its error.
    pub async fn open(
        base: &str,
        token: &str,
        open: serde_json::Value,
    ) -> anyhow::Result<(LiveClient, serde_json::Value)> {
        let url = format!("{}/api/live", base.replacen("http", "ws", 1));
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (mut socket, _) = tokio_tungstenite::connect_async(req)
            .await
            .context("the live WebSocket did not open")?;
        socket.send(Message::Text(open.to_string().into())).await?;
        let answer = next_json(&mut socket).await?;
        Ok((LiveClient { socket }, answer))
    }

    /// Sends samples (16 kHz mono) as one message.
    pub async fn send_pcm(&mut self, pcm: &[i16]) -> anyhow::Result<()> {
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.socket.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// Sends one Opus frame (format `opus`).
    pub async fn send_opus(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        self.socket
            .send(Message::Binary(frame.to_vec().into()))
            .await?;
        Ok(())
    }

    /// Ends the broadcast; the platform's summary.
    pub async fn end(mut self) -> anyhow::Result<serde_json::Value> {
        self.socket
            .send(Message::Text(r#"{"end":true}"#.into()))
            .await?;
        next_json(&mut self.socket).await
    }

    /// Drops the connection without ending (a source that vanishes).
    pub fn abandon(self) {
        drop(self.socket);
    }
}

async fn next_json(socket: &mut Socket) -> anyhow::Result<serde_json::Value> {
    loop {
        match socket.next().await.context("the live WebSocket closed")?? {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Close(_) => anyhow::bail!("the live WebSocket closed"),
            _ => {}
        }
    }
}
