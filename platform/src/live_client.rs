//! A live-voice client of a platform's WebSocket (`/api/live`), as
//! `platform live`, a script or the console's push-to-talk uses it: open
//! with the broadcast's fields, stream 20 ms of PCM at a time, end. Plain
//! `ws://` (the console on loopback, where the operator's microphone is).

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

/// Where live audio comes from.
pub enum LiveSource {
    /// The default capture device (feature `microphone`).
    Microphone,
    /// A recording, streamed at the pace it plays (a drill, a test).
    File(std::path::PathBuf),
}

/// Streams `source` into the open broadcast `client` in 20 ms frames
/// until it ends, `seconds` pass, or `stop` resolves; then ends the
/// broadcast. The platform's summary.
pub async fn stream(
    mut client: LiveClient,
    source: LiveSource,
    seconds: Option<u64>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<serde_json::Value> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<i16>>(50);
    let reader = tokio::task::spawn_blocking(move || read_source(source, tx));
    let deadline = seconds.map(|s| tokio::time::Instant::now() + std::time::Duration::from_secs(s));
    tokio::pin!(stop);
    loop {
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(f) => client.send_pcm(&f).await?,
                None => break,
            },
            _ = until => break,
            _ = &mut stop => break,
        }
    }
    drop(rx);
    let summary = client.end().await;
    reader.await??;
    summary
}

/// Reads 20 ms frames (16 kHz mono) from `source` into `tx`, paced as it
/// plays; stops when `tx` closes.
fn read_source(source: LiveSource, tx: tokio::sync::mpsc::Sender<Vec<i16>>) -> anyhow::Result<()> {
    let to_i16 = |f: &[f32]| {
        f.iter()
            .map(|s| codec::sink::to_i16(*s))
            .collect::<Vec<i16>>()
    };
    match source {
        LiveSource::File(path) => {
            let mut pcm = Vec::new();
            codec::normalise_file(
                &path,
                &codec::IngestConfig::default(),
                &mut |_| {},
                &mut |c| {
                    pcm.extend_from_slice(c);
                    Ok(())
                },
            )
            .with_context(|| format!("reading {}", path.display()))?;
            let started = std::time::Instant::now();
            for (i, frame) in pcm.chunks(crate::live::FRAME_SAMPLES).enumerate() {
                let due = started + std::time::Duration::from_millis(20 * i as u64);
                std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
                if tx.blocking_send(to_i16(frame)).is_err() {
                    break;
                }
            }
            Ok(())
        }
        LiveSource::Microphone => microphone(tx, to_i16),
    }
}

#[cfg(feature = "microphone")]
fn microphone(
    tx: tokio::sync::mpsc::Sender<Vec<i16>>,
    to_i16: impl Fn(&[f32]) -> Vec<i16>,
) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    let mut mic =
        codec::device::Microphone::open_default(16_000).context("opening the microphone")?;
    // A virtual capture device (ALSA's file plugin) delivers as fast as it
    // is read: frames are paced to the clock, 20 ms apart. A device that
    // falls behind (a stall) is not made up for: the pace starts again.
    let mut started = Instant::now();
    let mut n: u32 = 0;
    while !tx.is_closed() {
        if let Some(frame) = mic.next_frame(Duration::from_secs(2))? {
            let due = started + Duration::from_millis(20) * n;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > Duration::from_millis(200) {
                started = now;
                n = 0;
            }
            n += 1;
            if tx.blocking_send(to_i16(&frame)).is_err() {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "microphone"))]
fn microphone(
    _tx: tokio::sync::mpsc::Sender<Vec<i16>>,
    _to_i16: impl Fn(&[f32]) -> Vec<i16>,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no microphone support (build the platform with the microphone feature)"
    )
}
