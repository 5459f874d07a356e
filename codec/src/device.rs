//! The loudspeaker and the microphone through cpal (feature `cpal`).
//!
//! A cpal stream is not `Send` on every backend, so each lives on its own
//! thread; the sink and the capture talk to it through a shared queue. A
//! missing device is `SinkError::DeviceUnavailable`, never a panic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig};

use crate::error::CodecError;
use crate::resample::StreamResampler;
use crate::sink::{Sink, SinkError};

/// Most audio queued ahead of the device; `write` waits beyond it.
const MAX_QUEUED: Duration = Duration::from_millis(500);
/// Longest a write waits for the device before declaring it stalled.
const STALL: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<f32>>,
    underruns: AtomicU64,
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<f32>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unavailable(e: impl std::fmt::Display) -> SinkError {
    SinkError::DeviceUnavailable(e.to_string())
}

/// Plays through the default output device at the device's own rate and
/// sample format, converting from the broadcast rate.
pub struct SpeakerSink {
    rate: u32,
    device_rate: u32,
    device_name: String,
    resampler: StreamResampler,
    shared: Arc<Shared>,
    stop_tx: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SpeakerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SpeakerSink({} at {} Hz)",
            self.device_name, self.device_rate
        )
    }
}

impl SpeakerSink {
    pub fn open_default(rate: u32) -> Result<Self, SinkError> {
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("speaker".into())
            .spawn(move || {
                let stream = match open_output(thread_shared) {
                    Ok((stream, info)) => {
                        let _ = ready_tx.send(Ok(info));
                        stream
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Hold the stream until told to stop (or the sink is dropped).
                let _ = stop_rx.recv();
                drop(stream);
            })
            .map_err(|e| SinkError::Device(e.to_string()))?;
        let (device_name, device_rate) = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| unavailable("the audio device did not open within 10 s"))??;
        let resampler = StreamResampler::new(rate, device_rate)
            .map_err(|e| SinkError::Device(e.to_string()))?;
        Ok(SpeakerSink {
            rate,
            device_rate,
            device_name,
            resampler,
            shared,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn device_rate(&self) -> u32 {
        self.device_rate
    }

    /// Times the device wanted audio and none was queued.
    pub fn underruns(&self) -> u64 {
        self.shared.underruns.load(Ordering::Relaxed)
    }

    fn check_failure(&self) -> Result<(), SinkError> {
        match self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(f) => Err(SinkError::Device(f.clone())),
            None => Ok(()),
        }
    }

    fn enqueue(&mut self, samples: &[f32]) -> Result<(), SinkError> {
        let max = (self.device_rate as u128 * MAX_QUEUED.as_millis() / 1000) as usize;
        let started = Instant::now();
        let mut rest = samples;
        while !rest.is_empty() {
            self.check_failure()?;
            {
                let mut q = self.shared.lock();
                let room = max.saturating_sub(q.len());
                let take = room.min(rest.len());
                q.extend(&rest[..take]);
                rest = &rest[take..];
            }
            if !rest.is_empty() {
                if started.elapsed() > STALL {
                    return Err(SinkError::Device(
                        "the audio device stopped consuming audio".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    fn wait_drained(&self) -> Result<(), SinkError> {
        let started = Instant::now();
        while !self.shared.lock().is_empty() {
            self.check_failure()?;
            if started.elapsed() > MAX_QUEUED + STALL {
                return Err(SinkError::Device(
                    "the audio device stopped consuming audio".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

fn open_output(shared: Arc<Shared>) -> Result<(cpal::Stream, (String, u32)), SinkError> {
    let host = cpal::default_host();
    let device = host
        .default_output_device()
        .ok_or_else(|| unavailable("no default output device"))?;
    let name = device
        .description()
        .map(|d| d.to_string())
        .unwrap_or_else(|_| "default".into());
    let supported = device.default_output_config().map_err(unavailable)?;
    let config = supported.config();
    let rate = config.sample_rate;
    let stream = match supported.sample_format() {
        SampleFormat::F32 => build::<f32>(&device, config, shared),
        SampleFormat::I16 => build::<i16>(&device, config, shared),
        SampleFormat::U16 => build::<u16>(&device, config, shared),
        SampleFormat::I32 => build::<i32>(&device, config, shared),
        SampleFormat::F64 => build::<f64>(&device, config, shared),
        SampleFormat::I8 => build::<i8>(&device, config, shared),
        SampleFormat::U8 => build::<u8>(&device, config, shared),
        other => {
            return Err(SinkError::Device(format!(
                "unsupported device sample format {other}"
            )))
        }
    }?;
    stream
        .play()
        .map_err(|e| SinkError::Device(e.to_string()))?;
    Ok((stream, (name, rate)))
}

fn build<T>(
    device: &cpal::Device,
    config: StreamConfig,
    shared: Arc<Shared>,
) -> Result<cpal::Stream, SinkError>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = config.channels.max(1) as usize;
    let err_shared = shared.clone();
    device
        .build_output_stream::<T, _, _>(
            config,
            move |out: &mut [T], _| {
                let mut q = shared.lock();
                let mut starved = false;
                for frame in out.chunks_mut(channels) {
                    let s = q.pop_front().unwrap_or_else(|| {
                        starved = true;
                        0.0
                    });
                    let v = T::from_sample(s.clamp(-1.0, 1.0));
                    frame.iter_mut().for_each(|c| *c = v);
                }
                if starved {
                    shared.underruns.fetch_add(1, Ordering::Relaxed);
                }
            },
            move |e| {
                *err_shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            },
            None,
        )
        .map_err(|e| SinkError::Device(e.to_string()))
}

impl Sink for SpeakerSink {
    fn describe(&self) -> String {
        format!("speaker:{} ({} Hz)", self.device_name, self.device_rate)
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn write(&mut self, pcm: &[f32]) -> Result<(), SinkError> {
        let mut converted =
            Vec::with_capacity(pcm.len() * self.device_rate as usize / self.rate as usize + 64);
        self.resampler
            .push(pcm, &mut converted)
            .map_err(|e| SinkError::Device(e.to_string()))?;
        self.enqueue(&converted)
    }

    fn stop(&mut self) -> Result<(), SinkError> {
        let mut tail = Vec::new();
        self.resampler
            .finish(&mut tail)
            .map_err(|e| SinkError::Device(e.to_string()))?;
        self.enqueue(&tail)?;
        let drained = self.wait_drained();
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drained
    }
}

impl Drop for SpeakerSink {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Live input from the default capture device, delivered as 20 ms mono
/// frames at the broadcast rate.
pub struct Microphone {
    rx: mpsc::Receiver<Vec<f32>>,
    resampler: StreamResampler,
    frame: usize,
    pending: VecDeque<f32>,
    stop_tx: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Microphone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Microphone({} samples per frame)", self.frame)
    }
}

impl Microphone {
    pub fn open_default(rate: u32) -> Result<Self, CodecError> {
        let (chunk_tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("microphone".into())
            .spawn(move || {
                let opened = (|| -> Result<(cpal::Stream, u32), String> {
                    let host = cpal::default_host();
                    let device = host
                        .default_input_device()
                        .ok_or("no default input device")?;
                    let supported = preferred_input_config(&device).map_err(|e| e.to_string())?;
                    if supported.sample_format() != SampleFormat::F32
                        && supported.sample_format() != SampleFormat::I16
                    {
                        return Err(format!(
                            "unsupported capture format {}",
                            supported.sample_format()
                        ));
                    }
                    let config = supported.config();
                    let channels = config.channels.max(1) as usize;
                    let device_rate = config.sample_rate;
                    let stream = match supported.sample_format() {
                        SampleFormat::I16 => device.build_input_stream::<i16, _, _>(
                            config,
                            move |data: &[i16], _| {
                                let mono = data
                                    .chunks(channels)
                                    .map(|c| {
                                        c.iter().map(|s| *s as f32 / 32768.0).sum::<f32>()
                                            / channels as f32
                                    })
                                    .collect();
                                let _ = chunk_tx.send(mono);
                            },
                            |_| {},
                            None,
                        ),
                        _ => device.build_input_stream::<f32, _, _>(
                            config,
                            move |data: &[f32], _| {
                                let mono = data
                                    .chunks(channels)
                                    .map(|c| c.iter().sum::<f32>() / channels as f32)
                                    .collect();
                                let _ = chunk_tx.send(mono);
                            },
                            |_| {},
                            None,
                        ),
                    }
                    .map_err(|e| e.to_string())?;
                    stream.play().map_err(|e| e.to_string())?;
                    Ok((stream, device_rate))
                })();
                match opened {
                    Ok((stream, device_rate)) => {
                        let _ = ready_tx.send(Ok(device_rate));
                        let _ = stop_rx.recv();
                        drop(stream);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| CodecError::Config(e.to_string()))?;
        let device_rate = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| CodecError::Config("the capture device did not open within 10 s".into()))?
            .map_err(|e| CodecError::Config(format!("no capture device: {e}")))?;
        Ok(Microphone {
            rx,
            resampler: StreamResampler::new(device_rate, rate)?,
            frame: rate as usize / 50,
            pending: VecDeque::new(),
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The next 20 ms frame, waiting at most `timeout`; None on timeout.
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Option<Vec<f32>>, CodecError> {
        let deadline = Instant::now() + timeout;
        while self.pending.len() < self.frame {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => {
                    let mut out = Vec::new();
                    self.resampler.push(&chunk, &mut out)?;
                    self.pending.extend(out);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(CodecError::Config("the capture device stopped".into()))
                }
            }
        }
        Ok(Some(self.pending.drain(..self.frame).collect()))
    }
}

/// Speech is mono: prefer 16-bit mono at 48 kHz when the device offers it
/// (no conversion in the driver), else the device's default.
fn preferred_input_config(
    device: &cpal::Device,
) -> Result<cpal::SupportedStreamConfig, cpal::Error> {
    const RATE: u32 = 48_000;
    if let Ok(ranges) = device.supported_input_configs() {
        for r in ranges {
            if r.sample_format() == SampleFormat::I16
                && r.channels() == 1
                && r.min_sample_rate() <= RATE
                && RATE <= r.max_sample_rate()
            {
                return Ok(r.with_sample_rate(RATE));
            }
        }
    }
    device.default_input_config()
}

impl Drop for Microphone {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
