//! A request body streamed from Python into a `wasi:http` guest, through a bounded channel.
//!
//! The HTTP trigger feeds the chunks ASGI `receive()` hands it; the guest reads them from
//! its `incoming-body` stream as they come. The channel holds at most `capacity` chunks:
//! when the guest reads slower than the client sends, `try_send` says so and the Python
//! side waits in `send_blocking` (GIL released), which stops it reading from the socket:
//! the gateway never holds more than a few chunks of a body, whatever its size.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use parking_lot::Mutex;
use pyo3::prelude::*;
use tokio::sync::mpsc::{self, error::TrySendError};

type Chunk = Result<Bytes, String>;

/// The Python end of one request body.
#[pyclass(module = "gateway._native", frozen)]
pub struct RequestBody {
    sender: Mutex<Option<mpsc::Sender<Chunk>>>,
    receiver: Mutex<Option<mpsc::Receiver<Chunk>>>,
}

impl RequestBody {
    /// The guest's end; None once a call has taken it (a body is read once).
    pub fn take_receiver(&self) -> Option<ChannelBody> {
        self.receiver.lock().take().map(ChannelBody)
    }

    fn sender(&self) -> Option<mpsc::Sender<Chunk>> {
        self.sender.lock().clone()
    }
}

#[pymethods]
impl RequestBody {
    #[new]
    fn new(capacity: usize) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        RequestBody {
            sender: Mutex::new(Some(sender)),
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// Queue `chunk` without waiting. False when the channel is full; True when queued,
    /// or when nobody reads any more (the call ended: the chunk is dropped, see `closed`).
    fn try_send(&self, chunk: Vec<u8>) -> bool {
        let Some(sender) = self.sender() else {
            return true;
        };
        match sender.try_send(Ok(Bytes::from(chunk))) {
            Ok(()) | Err(TrySendError::Closed(_)) => true,
            Err(TrySendError::Full(_)) => false,
        }
    }

    /// Queue `chunk`, waiting (GIL released) for room. False when nobody reads any more.
    /// Call it off the event loop's thread.
    fn send_blocking(&self, py: Python<'_>, chunk: Vec<u8>) -> bool {
        let Some(sender) = self.sender() else {
            return false;
        };
        py.detach(move || sender.blocking_send(Ok(Bytes::from(chunk))).is_ok())
    }

    /// True once the guest's end is gone (its call ended).
    #[getter]
    fn closed(&self) -> bool {
        self.sender().is_none_or(|s| s.is_closed())
    }

    /// The body is complete: the guest's stream ends after the queued chunks.
    fn finish(&self) {
        self.sender.lock().take();
    }

    /// The body cannot be completed (too large, too slow, the client left): the guest's
    /// stream fails with `message` after the queued chunks.
    fn fail(&self, message: String) {
        if let Some(sender) = self.sender.lock().take() {
            // Full or closed: the guest then sees the end, or is gone; nothing to add.
            let _ = sender.try_send(Err(message));
        }
    }
}

/// The guest's end of a [`RequestBody`]: an `http_body::Body` over the channel.
pub struct ChannelBody(mpsc::Receiver<Chunk>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(Some(Err(message))) => Poll::Ready(Some(Err(
                wasmtime_wasi_http::Error::InternalError(Some(message)),
            ))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
