//! The store's data and the host side of the WIT imports.
//!
//! `config.get` is answered natively from the component's variables; every other import
//! is a shim over the Python implementation in `bindings/host/` (an object with one
//! method per import), called with the GIL held only for that call and inside the
//! event's `contextvars.Context`, so the Python side sees the event id and deadline the
//! caller bound. A Python exception becomes the import's `err` value with the exception's
//! text: the Python side has already masked secrets and logged the refusal.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::limits::Limits;
use crate::stderr::StderrCapture;

wasmtime::component::bindgen!({
    world: "handler",
    path: "../bindings/wit",
});

/// `wasi:config/store`, answered from the component's variables as `config.get` is.
mod wasi_config {
    wasmtime::component::bindgen!({
        world: "wasmgate:wasi-http-deps/config-host",
        path: "../bindings/wit-wasi-http",
    });
}

use wasi_config::wasi::config::store as config_store;

pub use wasmgate::handler::types;
use wasmgate::handler::{config, kv, log, outbound_http, publish, sql};

/// What every store of one component shares: the Python host object and the variables.
pub struct HostImports {
    pub host: Py<PyAny>,
    pub variables: HashMap<String, String>,
}

/// What a host call needs of the call in progress: the Python host and the event's context.
/// It is also the `wasi:http` hooks object, so outgoing requests reach the same host.
pub struct CallScope {
    pub imports: Arc<HostImports>,
    /// The `contextvars.Context` of the event being handled, while a call runs.
    pub context: Option<Py<PyAny>>,
    /// When the call in progress (or the instantiation) must end: WASI timers stop there.
    pub deadline: Option<std::time::Instant>,
    /// Whether a WASI timer of this call was cut at the deadline (a call that then ends at
    /// or past the deadline timed out).
    pub timer_cut: bool,
}

/// A store's data: WASI state, limits, the captured stderr and the current call's scope.
pub struct HostState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limits: Limits,
    pub stderr: StderrCapture,
    pub scope: CallScope,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.scope,
        }
    }
}

/// Define WASI p2, `wasi:http` and every wasmgate import in `linker`: a component of
/// either world may import any of them (what it imports is still granted per manifest).
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    crate::deadline_clock::link(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)?;
    config_store::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    crate::keyvalue::link(linker)?;
    Handler::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

impl HostState {
    pub(crate) fn call_python<R>(
        &self,
        method: &str,
        args: impl FnOnce(Python<'_>) -> PyResult<Vec<Bound<'_, PyAny>>>,
        convert: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<R>,
    ) -> Result<R, String> {
        self.scope.call_python(method, args, convert)
    }
}

impl CallScope {
    /// Call `method` of the Python host object with `args` inside the call's context,
    /// then convert its result with `convert`. Any Python error becomes `Err(text)`.
    fn call_python<R>(
        &self,
        method: &str,
        args: impl FnOnce(Python<'_>) -> PyResult<Vec<Bound<'_, PyAny>>>,
        convert: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<R>,
    ) -> Result<R, String> {
        Python::attach(|py| {
            let run = || -> PyResult<R> {
                let func = self.imports.host.bind(py).getattr(method)?;
                let mut items = vec![func];
                items.extend(args(py)?);
                let result = match &self.context {
                    Some(ctx) => ctx.bind(py).call_method1("run", PyTuple::new(py, items)?)?,
                    None => {
                        let func = items.remove(0);
                        func.call1(PyTuple::new(py, items)?)?
                    }
                };
                convert(&result)
            };
            run().map_err(|err| error_text(py, &err))
        })
    }
}

pub fn error_text(py: Python<'_>, err: &PyErr) -> String {
    let text = err
        .value(py)
        .str()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if text.is_empty() {
        err.get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "host call failed".to_owned())
    } else {
        text
    }
}

pub(crate) fn py_str<'py>(py: Python<'py>, s: &str) -> Bound<'py, PyAny> {
    PyString::new(py, s).into_any()
}

pub(crate) fn py_bytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyAny> {
    PyBytes::new(py, b).into_any()
}

fn py_pairs<'py>(py: Python<'py>, pairs: &[(String, String)]) -> PyResult<Bound<'py, PyAny>> {
    let items = pairs
        .iter()
        .map(|(k, v)| PyTuple::new(py, [k.as_str(), v.as_str()]))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(PyList::new(py, items)?.into_any())
}

/// `bytes` (or any buffer) -> Vec<u8>, one memcpy.
pub fn to_vec(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    value.extract::<Vec<u8>>()
}

pub fn to_pairs(value: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in value.try_iter()? {
        out.push(item?.extract::<(String, String)>()?);
    }
    Ok(out)
}

impl types::Host for HostState {}

impl kv::Host for HostState {
    fn get(&mut self, store: String, key: String) -> Result<Option<Vec<u8>>, String> {
        self.call_python(
            "kv_get",
            |py| Ok(vec![py_str(py, &store), py_str(py, &key)]),
            |v| {
                if v.is_none() {
                    Ok(None)
                } else {
                    to_vec(v).map(Some)
                }
            },
        )
    }

    fn set(
        &mut self,
        store: String,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), String> {
        self.call_python(
            "kv_set",
            |py| {
                let ttl = match ttl_ms {
                    Some(t) => t.into_pyobject(py)?.into_any(),
                    None => py.None().into_bound(py),
                };
                Ok(vec![
                    py_str(py, &store),
                    py_str(py, &key),
                    py_bytes(py, &value),
                    ttl,
                ])
            },
            |_| Ok(()),
        )
    }

    fn delete(&mut self, store: String, key: String) -> Result<(), String> {
        self.call_python(
            "kv_delete",
            |py| Ok(vec![py_str(py, &store), py_str(py, &key)]),
            |_| Ok(()),
        )
    }

    fn exists(&mut self, store: String, key: String) -> Result<bool, String> {
        self.call_python(
            "kv_exists",
            |py| Ok(vec![py_str(py, &store), py_str(py, &key)]),
            |v| v.is_truthy(),
        )
    }

    fn list_keys(&mut self, store: String, prefix: String) -> Result<Vec<String>, String> {
        self.call_python(
            "kv_list_keys",
            |py| Ok(vec![py_str(py, &store), py_str(py, &prefix)]),
            |v| v.extract::<Vec<String>>(),
        )
    }

    fn increment(&mut self, store: String, key: String, delta: i64) -> Result<i64, String> {
        self.call_python(
            "kv_increment",
            |py| {
                Ok(vec![
                    py_str(py, &store),
                    py_str(py, &key),
                    delta.into_pyobject(py)?.into_any(),
                ])
            },
            |v| v.extract::<i64>(),
        )
    }
}

impl config::Host for HostState {
    fn get(&mut self, name: String) -> Result<Option<String>, String> {
        Ok(self.scope.imports.variables.get(&name).cloned())
    }
}

impl config_store::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<String>, config_store::Error> {
        Ok(self.scope.imports.variables.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config_store::Error> {
        Ok(self
            .scope
            .imports
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl log::Host for HostState {
    fn emit(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        // A log line that cannot be written is not the guest's problem: the Python side
        // reports its own failures.
        let _ = self.call_python(
            "log_emit",
            |py| Ok(vec![py_str(py, level), py_str(py, &message)]),
            |_| Ok(()),
        );
    }
}

impl publish::Host for HostState {
    fn send(&mut self, m: publish::Message) -> Result<String, String> {
        self.call_python(
            "publish_send",
            |py| {
                let key = match &m.key {
                    Some(k) => py_bytes(py, k),
                    None => py.None().into_bound(py),
                };
                Ok(vec![
                    py_str(py, &m.broker),
                    py_str(py, &m.destination),
                    key,
                    py_pairs(py, &m.headers)?,
                    py_bytes(py, &m.body),
                ])
            },
            |v| v.extract::<String>(),
        )
    }
}

fn sql_params<'py>(py: Python<'py>, params: &[sql::Value]) -> PyResult<Bound<'py, PyAny>> {
    let items = params
        .iter()
        .map(|p| -> PyResult<Bound<'py, PyAny>> {
            Ok(match p {
                sql::Value::Null => py.None().into_bound(py),
                sql::Value::Integer(i) => i.into_pyobject(py)?.into_any(),
                sql::Value::Real(f) => f.into_pyobject(py)?.into_any(),
                sql::Value::Text(s) => py_str(py, s),
                sql::Value::Blob(b) => py_bytes(py, b),
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(PyList::new(py, items)?.into_any())
}

fn sql_value(v: &Bound<'_, PyAny>) -> PyResult<sql::Value> {
    if v.is_none() {
        Ok(sql::Value::Null)
    } else if v.is_instance_of::<PyBool>() || v.is_instance_of::<PyInt>() {
        Ok(sql::Value::Integer(v.extract::<i64>()?))
    } else if v.is_instance_of::<PyFloat>() {
        Ok(sql::Value::Real(v.extract::<f64>()?))
    } else if let Ok(s) = v.cast::<PyString>() {
        Ok(sql::Value::Text(s.to_str()?.to_owned()))
    } else {
        Ok(sql::Value::Blob(to_vec(v)?))
    }
}

impl sql::Host for HostState {
    fn query(
        &mut self,
        database: String,
        statement: String,
        params: Vec<sql::Value>,
    ) -> Result<sql::RowSet, String> {
        self.call_python(
            "sql_query",
            |py| {
                Ok(vec![
                    py_str(py, &database),
                    py_str(py, &statement),
                    sql_params(py, &params)?,
                ])
            },
            |v| {
                let (columns, rows): (Vec<String>, Bound<'_, PyAny>) = v.extract()?;
                let mut out = Vec::new();
                for row in rows.try_iter()? {
                    let row = row?;
                    let mut values = Vec::new();
                    for value in row.try_iter()? {
                        values.push(sql_value(&value?)?);
                    }
                    out.push(values);
                }
                Ok(sql::RowSet { columns, rows: out })
            },
        )
    }

    fn execute(
        &mut self,
        database: String,
        statement: String,
        params: Vec<sql::Value>,
    ) -> Result<u64, String> {
        self.call_python(
            "sql_execute",
            |py| {
                Ok(vec![
                    py_str(py, &database),
                    py_str(py, &statement),
                    sql_params(py, &params)?,
                ])
            },
            |v| v.extract::<u64>(),
        )
    }
}

impl outbound_http::Host for HostState {
    fn send(&mut self, req: outbound_http::Request) -> Result<outbound_http::Reply, String> {
        self.call_python(
            "http_send",
            |py| {
                let timeout = match req.timeout_ms {
                    Some(t) => t.into_pyobject(py)?.into_any(),
                    None => py.None().into_bound(py),
                };
                Ok(vec![
                    py_str(py, &req.method),
                    py_str(py, &req.url),
                    py_pairs(py, &req.headers)?,
                    py_bytes(py, &req.body),
                    timeout,
                ])
            },
            |v| {
                let (status, headers, body): (u16, Bound<'_, PyAny>, Bound<'_, PyAny>) =
                    v.extract()?;
                Ok(outbound_http::Reply {
                    status,
                    headers: to_pairs(&headers)?,
                    body: to_vec(&body)?,
                })
            },
        )
    }
}
