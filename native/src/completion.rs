//! Finished calls on their way back to the asyncio loop.
//!
//! A worker thread pushes its result and, only when the queue was empty, writes to an
//! eventfd the loop watches (`loop.add_reader`). The loop drains every finished call in
//! one go: one wake-up per batch, and the worker never takes the GIL to hand a result back.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::event::Finished;

pub struct Done {
    pub call_id: u64,
    pub finished: Finished,
    /// The caller's context, dropped here with the GIL held rather than on a worker.
    pub context: Option<Py<PyAny>>,
}

pub struct Completions {
    done: Mutex<Vec<Done>>,
    wake: OwnedFd,
}

impl Completions {
    fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Completions {
            done: Mutex::new(Vec::new()),
            // SAFETY: `fd` was just created and is owned by nothing else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn push(&self, done: Done) {
        let was_empty = {
            let mut q = self.done.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = q.is_empty();
            q.push(done);
            was_empty
        };
        if was_empty {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full counter
            // (EAGAIN) still leaves the fd readable, which is all the loop needs.
            unsafe {
                libc::write(
                    self.wake.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
    }

    fn take(&self) -> Vec<Done> {
        let mut counter: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                (&mut counter as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Where a loop's finished calls wait to be drained (one per asyncio loop).
#[pyclass(module = "gateway._native", frozen)]
pub struct CompletionQueue {
    pub inner: Arc<Completions>,
}

#[pymethods]
impl CompletionQueue {
    #[new]
    fn new() -> PyResult<Self> {
        let inner = Completions::new()
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("eventfd: {e}")))?;
        Ok(CompletionQueue {
            inner: Arc::new(inner),
        })
    }

    /// The eventfd that becomes readable when calls have finished.
    fn fileno(&self) -> i32 {
        self.inner.wake.as_raw_fd()
    }

    /// Every finished call since the last drain:
    /// `[(call_id, kind, payload, stderr, stderr_dropped), ...]`.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let done = self.inner.take();
        let list = PyList::empty(py);
        for d in done {
            let (kind, payload) = d.finished.outcome.into_python(py)?;
            let stderr = PyBytes::new(py, &d.finished.stderr);
            list.append((d.call_id, kind, payload, stderr, d.finished.stderr_dropped))?;
            drop(d.context);
        }
        Ok(list)
    }
}
