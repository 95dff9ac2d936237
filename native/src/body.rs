//! A request body streamed from Python into a `wasi:http` guest, through a bounded channel.
//!
//! The HTTP trigger feeds the chunks ASGI `receive()` hands it; the guest reads them from
//! its `incoming-body` stream as they come. The channel holds at most `capacity` chunks:
//! when the guest reads slower than the client sends, `try_send` says so and the Python
//! side waits in `send_blocking` (GIL released), which stops it reading from the socket:
//! the gateway never holds more than a few chunks of a body, whatever its size.
//!
//! A response body goes the other way the same way: [`response_channel`] links the guest's
//! outgoing body (read by a task on wasmtime's runtime) to a [`ResponseStream`] the HTTP
//! trigger reads, woken by the stream's own eventfd.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
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

/// One piece of a response body on its way from the guest to the HTTP client.
enum Piece {
    Chunk(Bytes),
    /// The guest finished the body: everything before it is the whole response.
    End,
    /// The body was cut off (over `max-response-bytes`, or failed): the text says why.
    Cut(String),
}

/// An eventfd the loop watches (`loop.add_reader`) to learn that a stream has more.
struct Wake(OwnedFd);

impl Wake {
    fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full counter
        // (EAGAIN) still leaves the fd readable, which is all the loop needs.
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    fn clear(&self) {
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(
                self.0.as_raw_fd(),
                (&mut counter as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// The guest's end of a streamed response body: a bounded channel to a [`ResponseStream`].
pub struct ResponseSink {
    sender: Option<mpsc::Sender<Piece>>,
    wake: Arc<Wake>,
}

/// A new streamed response body holding at most `capacity` chunks in flight: when the
/// client reads slower than the guest writes, [`ResponseSink::send`] waits, and so do the
/// guest's writes behind it.
pub fn response_channel(capacity: usize) -> std::io::Result<(ResponseSink, ResponseStream)> {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let wake = Arc::new(Wake::new()?);
    Ok((
        ResponseSink {
            sender: Some(sender),
            wake: wake.clone(),
        },
        ResponseStream {
            receiver: Mutex::new(Some(receiver)),
            wake,
        },
    ))
}

impl ResponseSink {
    /// Queue `chunk`, waiting for room; false once the reader is gone (client, deadline).
    pub async fn send(&self, chunk: Bytes) -> bool {
        self.put(Piece::Chunk(chunk)).await
    }

    /// The body is complete.
    pub async fn end(&self) {
        self.put(Piece::End).await;
    }

    /// The body is cut off for `reason`; never waits (the channel may be full).
    pub fn cut(&self, reason: String) {
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(Piece::Cut(reason));
            self.wake.notify();
        }
    }

    async fn put(&self, piece: Piece) -> bool {
        let Some(sender) = &self.sender else {
            return false;
        };
        let sent = sender.send(piece).await.is_ok();
        self.wake.notify();
        sent
    }
}

impl Drop for ResponseSink {
    fn drop(&mut self) {
        // Close the channel before waking the reader, so that it sees the end (without
        // `End`: a cut) rather than an empty channel it would wait on forever.
        self.sender.take();
        self.wake.notify();
    }
}

/// The Python end of a streamed response body (see gateway/response_stream.py).
#[pyclass(module = "gateway._native", frozen)]
pub struct ResponseStream {
    receiver: Mutex<Option<mpsc::Receiver<Piece>>>,
    wake: Arc<Wake>,
}

#[pymethods]
impl ResponseStream {
    /// The eventfd that becomes readable when the stream may have more.
    fn fileno(&self) -> i32 {
        self.wake.0.as_raw_fd()
    }

    /// Reset the eventfd (after it woke the loop), before looking again with `try_next`.
    fn clear(&self) {
        self.wake.clear();
    }

    /// The next chunk without waiting: bytes (never empty), `b""` at the body's end, None
    /// when nothing has arrived yet. Raises ResponseCut when the body was cut off.
    fn try_next<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut receiver = self.receiver.lock();
        let Some(rx) = receiver.as_mut() else {
            return Err(crate::ResponseCut::new_err(
                "the response stream was closed",
            ));
        };
        match rx.try_recv() {
            Ok(Piece::Chunk(chunk)) => Ok(Some(PyBytes::new(py, &chunk))),
            Ok(Piece::End) => {
                receiver.take();
                Ok(Some(PyBytes::new(py, b"")))
            }
            Ok(Piece::Cut(reason)) => {
                receiver.take();
                Err(crate::ResponseCut::new_err(reason))
            }
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => {
                receiver.take();
                Err(crate::ResponseCut::new_err(
                    "the response body ended before the guest finished it",
                ))
            }
        }
    }

    /// Stop reading: the guest's next write fails, and the call ends.
    fn close(&self) {
        self.receiver.lock().take();
    }
}
