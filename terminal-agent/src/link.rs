//! A terminal's session with an upstream (the `transport::uplink` handler):
//! hello and subscribe, then broadcast streams in, control messages in,
//! reports out. Every frame goes to the core through the driver; the link
//! only counts what the core refused against the stream and the link.

use std::sync::Arc;

use protocol::{Hello, Message, Refusal};
use quinn::Connection;
use tokio::sync::{mpsc, oneshot};
use transport::guard::{self, Strikes};
use transport::uplink::{Handler, SessionEnd};
use transport::FrameStream;

use crate::core::ControlVerdict;
use crate::driver::Input;

pub(crate) struct TerminalLink {
    pub serial: u64,
    pub software: String,
    pub inputs: mpsc::Sender<Input>,
    /// Receipts, status and events from the core; they wait here while no
    /// upstream is connected.
    pub up: mpsc::Receiver<Message>,
}

/// Tells the core the link is down however the session ends.
struct DownOnDrop(mpsc::Sender<Input>);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.try_send(Input::Link { up: false });
    }
}

impl Handler for TerminalLink {
    async fn session(&mut self, conn: &Connection, strikes: &Arc<Strikes>) -> SessionEnd {
        match self.run(conn, strikes).await {
            Ok(end) => end,
            Err(e) => SessionEnd::Lost(e.to_string()),
        }
    }
}

impl TerminalLink {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Input) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inputs
            .send(make(tx))
            .await
            .map_err(|_| anyhow::anyhow!("the terminal is stopping"))?;
        Ok(rx.await?)
    }

    async fn run(
        &mut self,
        conn: &Connection,
        strikes: &Arc<Strikes>,
    ) -> anyhow::Result<SessionEnd> {
        let peer_chain = Arc::new(transport::peer_chain(conn)?);
        let peer = peer_chain.last().map_or(0, certs::Certificate::serial);
        let (mut send, recv) = conn.open_bi().await?;
        let mut control = FrameStream::new(recv);
        let hello = Hello {
            tier: certs::Tier::Terminal,
            serial: self.serial,
            software: self.software.clone(),
        };
        transport::send(&mut send, &Message::Hello(hello)).await?;
        let subscribe = self.ask(|reply| Input::Subscribe { reply }).await?;
        transport::send(&mut send, &Message::Subscribe(subscribe)).await?;
        self.inputs.send(Input::Link { up: true }).await?;
        let _down = DownOnDrop(self.inputs.clone());
        loop {
            tokio::select! {
                stream = conn.accept_uni() => {
                    let frames = FrameStream::new(stream?);
                    tokio::spawn(receive(frames, self.inputs.clone(), strikes.clone(), peer));
                }
                msg = self.up.recv() => match msg {
                    Some(m) => transport::send(&mut send, &m).await?,
                    None => return Ok(SessionEnd::Lost("the terminal is stopping".into())),
                },
                frame = control.next() => match frame {
                    Ok(Some(raw)) => {
                        let chain = peer_chain.clone();
                        let verdict = self
                            .ask(|verdict| Input::Control { raw, peer_chain: chain, verdict })
                            .await?;
                        match verdict {
                            ControlVerdict::Done => {}
                            ControlVerdict::Strike => strikes.strike(),
                            ControlVerdict::Hostile(why) => return Ok(SessionEnd::Hostile(why)),
                        }
                    }
                    Ok(None) => {
                        return Ok(SessionEnd::Lost("upstream closed the control stream".into()))
                    }
                    Err(e) => {
                        if let Some(d) = e.framing() {
                            let refusal = Refusal::Malformed(d.clone());
                            let _ = self.inputs.send(Input::Refusal { refusal, offender: peer }).await;
                            return Ok(SessionEnd::Hostile("garbled control stream"));
                        }
                        return Err(e.into());
                    }
                },
                e = conn.closed() => return Ok(SessionEnd::Lost(e.to_string())),
            }
        }
    }
}

/// One broadcast stream: each frame goes to the core, one at a time (a
/// stream never has more than one frame waiting); a stream that keeps
/// failing verification is stopped (`guard::StreamRefusals`).
async fn receive(
    mut frames: FrameStream,
    inputs: mpsc::Sender<Input>,
    strikes: Arc<Strikes>,
    upstream: u64,
) {
    let mut refusals = guard::StreamRefusals::default();
    loop {
        let raw = match frames.next().await {
            Ok(Some(raw)) => raw,
            Ok(None) => return,
            Err(e) => {
                if let Some(d) = e.framing() {
                    let refusal = Refusal::Malformed(d.clone());
                    let _ = inputs
                        .send(Input::Refusal {
                            refusal,
                            offender: upstream,
                        })
                        .await;
                    strikes.strike();
                }
                frames.stop();
                return;
            }
        };
        let (tx, rx) = oneshot::channel();
        let input = Input::Broadcast {
            raw,
            upstream,
            refused: tx,
        };
        if inputs.send(input).await.is_err() {
            return;
        }
        let Ok(refused) = rx.await else { return };
        if refused {
            strikes.strike();
        }
        if refusals.note(refused) {
            break;
        }
    }
    frames.stop();
}
