//! A guest's stderr, captured per call into a bounded buffer.
//!
//! The gateway logs it line by line as structured records (component and event id bound),
//! so a guest can neither forge a log line nor flood the log: past `cap` bytes a call's
//! output is counted, not kept. Writes never fail, so a chatty guest never traps on it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamError};

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

/// A bounded capture of one store's stderr; cloning shares the buffer.
#[derive(Clone)]
pub struct StderrCapture {
    cap: usize,
    inner: Arc<Mutex<Captured>>,
}

impl StderrCapture {
    pub fn new(cap: usize) -> Self {
        StderrCapture {
            cap,
            inner: Arc::new(Mutex::new(Captured::default())),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap.saturating_sub(c.kept.len());
        let kept = bytes.len().min(room);
        c.kept.extend_from_slice(&bytes[..kept]);
        c.dropped += (bytes.len() - kept) as u64;
    }

    /// What the guest wrote since the last take, and how many bytes were dropped.
    pub fn take(&self) -> (Vec<u8>, u64) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let out = std::mem::take(&mut *c);
        (out.kept, out.dropped)
    }
}

impl IsTerminal for StderrCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrCapture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always ready; the permit bounds one write's allocation, as WASI's own streams do.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for StderrCapture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for StderrCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let capture = StderrCapture::new(5);
        capture.append(b"abc");
        capture.append(b"defgh");
        assert_eq!(capture.take(), (b"abcde".to_vec(), 3));
        // A take starts the next call from nothing.
        assert_eq!(capture.take(), (Vec::new(), 0));
    }
}
