//! wasmgate's executor core: wasmtime's Rust API behind a small PyO3 module.
//!
//! Python sees five classes (`Engine`, `Component`, `Pool`, `CompletionQueue`,
//! `RequestBody`) and a few exception types; everything above them (admission, retries,
//! delivery, logging) stays in Python. The GIL is released for the whole of a call: lowering the event, running the
//! guest and lifting the response happen on the pool's own threads, and a finished call
//! reaches the asyncio loop through an eventfd that wakes it once per batch.

mod body;
mod completion;
mod deadline_clock;
mod engine;
mod event;
mod host;
mod keyvalue;
mod limits;
mod pool;
mod response;
mod stderr;
mod wasi_http;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _native,
    NativeError,
    PyException,
    "Base of the errors the native executor raises."
);
create_exception!(
    _native,
    ComponentLoadError,
    NativeError,
    "A file is not a valid component, or its compiled artifact cannot be made."
);
create_exception!(
    _native,
    ComponentContractError,
    NativeError,
    "The component does not target a world the gateway can run."
);
create_exception!(
    _native,
    InstantiateError,
    NativeError,
    "An instance could not be created (its imports, limits or start code)."
);

create_exception!(
    _native,
    ResponseCut,
    NativeError,
    "A streamed response body was cut off before its end (size limit, trap, timeout)."
);

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("NativeError", py.get_type::<NativeError>())?;
    m.add("ComponentLoadError", py.get_type::<ComponentLoadError>())?;
    m.add(
        "ComponentContractError",
        py.get_type::<ComponentContractError>(),
    )?;
    m.add("InstantiateError", py.get_type::<InstantiateError>())?;
    m.add("ResponseCut", py.get_type::<ResponseCut>())?;
    m.add("WASMTIME_VERSION", engine::WASMTIME_VERSION)?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::LoadedComponent>()?;
    m.add_class::<pool::Pool>()?;
    m.add_class::<completion::CompletionQueue>()?;
    m.add_class::<body::RequestBody>()?;
    m.add_class::<body::ResponseStream>()?;
    Ok(())
}
