//! The event going in and the outcome coming out, as Rust values.
//!
//! An event is copied out of its Python object once, with the GIL held, when it is
//! submitted; from then on the call needs no Python. An outcome becomes Python objects
//! once, on the loop's thread, when the completion queue is drained.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::body::ResponseStream;
use crate::host::types::{Event, Response};
use crate::host::{to_pairs, to_vec};

/// Read the fields of a `bindings.types.Event` (or anything with the same attributes).
pub fn event_from_python(ev: &Bound<'_, PyAny>) -> PyResult<Event> {
    let py = ev.py();
    let time: i128 = ev.getattr(pyo3::intern!(py, "time"))?.extract()?;
    let time = u64::try_from(time).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "event `time` must be microseconds since 1970 (0 or more), got {time}"
        ))
    })?;
    let key = ev.getattr(pyo3::intern!(py, "key"))?;
    Ok(Event {
        id: ev.getattr(pyo3::intern!(py, "id"))?.extract()?,
        source: ev.getattr(pyo3::intern!(py, "source"))?.extract()?,
        type_: ev.getattr(pyo3::intern!(py, "type"))?.extract()?,
        subject: ev.getattr(pyo3::intern!(py, "subject"))?.extract()?,
        time,
        content_type: ev.getattr(pyo3::intern!(py, "content_type"))?.extract()?,
        key: if key.is_none() {
            None
        } else {
            Some(to_vec(&key)?)
        },
        headers: to_pairs(&ev.getattr(pyo3::intern!(py, "headers"))?)?,
        metadata: to_pairs(&ev.getattr(pyo3::intern!(py, "metadata"))?)?,
        data: to_vec(&ev.getattr(pyo3::intern!(py, "data"))?)?,
    })
}

/// How one call ended.
pub enum Outcome {
    /// `ok(response)`.
    Ok(Response),
    /// `err(message)` from the guest.
    Returned(String),
    /// The guest trapped: the trap's kind and message.
    Trap(String),
    /// The epoch deadline interrupted the guest.
    Timeout,
    /// No instance could be made for the call (limits, start code).
    Unavailable(String),
    /// The guest's response is over a size limit; it is not passed on.
    Invalid(String),
    /// A streamed response's status and headers, sent before the call ends (its final
    /// outcome follows under the same call id); the body arrives on the stream.
    Head(u16, Vec<(String, String)>, ResponseStream),
}

impl Outcome {
    pub const OK: u8 = 0;
    pub const RETURNED: u8 = 1;
    pub const TRAP: u8 = 2;
    pub const TIMEOUT: u8 = 3;
    pub const UNAVAILABLE: u8 = 4;
    pub const INVALID: u8 = 5;
    pub const HEAD: u8 = 6;

    /// `(kind, payload)`: payload is `(status, headers, body)` for OK, else a message.
    pub fn into_python(self, py: Python<'_>) -> PyResult<(u8, Py<PyAny>)> {
        Ok(match self {
            Outcome::Ok(r) => {
                let headers = r
                    .headers
                    .iter()
                    .map(|(k, v)| PyTuple::new(py, [k.as_str(), v.as_str()]))
                    .collect::<PyResult<Vec<_>>>()?;
                let payload = (
                    r.status,
                    PyList::new(py, headers)?,
                    PyBytes::new(py, &r.body),
                );
                (Self::OK, payload.into_pyobject(py)?.into_any().unbind())
            }
            Outcome::Returned(m) => (Self::RETURNED, m.into_pyobject(py)?.into_any().unbind()),
            Outcome::Trap(m) => (Self::TRAP, m.into_pyobject(py)?.into_any().unbind()),
            Outcome::Timeout => (Self::TIMEOUT, py.None()),
            Outcome::Unavailable(m) => {
                (Self::UNAVAILABLE, m.into_pyobject(py)?.into_any().unbind())
            }
            Outcome::Invalid(m) => (Self::INVALID, m.into_pyobject(py)?.into_any().unbind()),
            Outcome::Head(status, headers, stream) => {
                let headers = headers
                    .iter()
                    .map(|(k, v)| PyTuple::new(py, [k.as_str(), v.as_str()]))
                    .collect::<PyResult<Vec<_>>>()?;
                let payload = (status, PyList::new(py, headers)?, Py::new(py, stream)?);
                (Self::HEAD, payload.into_pyobject(py)?.into_any().unbind())
            }
        })
    }
}

/// A finished call: its outcome and what the guest wrote to stderr during it.
pub struct Finished {
    pub outcome: Outcome,
    pub stderr: Vec<u8>,
    pub stderr_dropped: u64,
}

impl Finished {
    /// `(kind, payload, stderr, stderr_dropped)`.
    pub fn into_python(self, py: Python<'_>) -> PyResult<Py<PyTuple>> {
        let (kind, payload) = self.outcome.into_python(py)?;
        let stderr = PyBytes::new(py, &self.stderr);
        Ok((kind, payload, stderr, self.stderr_dropped)
            .into_pyobject(py)?
            .unbind())
    }
}
