//! The standard `wasi:http/proxy` world: one event in as an `incoming-request`, the
//! `outgoing-response` out as a wasmgate `Response`.
//!
//! The event arrives already shaped as a request by gateway/wasi_http.py: its metadata
//! holds `method`, `path-with-query` and `authority`, its headers are the request's
//! headers and its data the body. The response body is collected while the guest writes
//! it (wasi:http's outgoing body is a bounded channel: a guest writing more than a chunk
//! would wait forever on a reader that only starts after `handle` returns), and refused
//! past `max-response-bytes`.
//!
//! Outgoing requests (`wasi:http/outgoing-handler`) never touch the network from here:
//! [`CallScope::send_request`] hands them to the Python host's `http_send`, the same
//! path as the `outbound-http` import, so one allow-list, timeout, size limit and the
//! event's deadline apply to both.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::sync::Proxy;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks, WasiHttpView};

use crate::body::{response_channel, ChannelBody, ResponseSink, ResponseStream};
use crate::host::types::{Event, Response};
use crate::host::{error_text, to_pairs, to_vec, CallScope, HostState};

/// How a wasi:http call ended, short of a trap.
pub enum Served {
    Response(Response),
    /// The guest answered with an `error-code`, or never set the response.
    NoResponse(String),
    /// The body grew past `max-response-bytes` (the size reached when it was cut off).
    TooLarge(usize),
}

type Outparam = Result<hyper_response::Response, ErrorCode>;

/// Called once with a streamed response's status, headers and body stream.
pub type OnHead = Box<dyn FnOnce(u16, Vec<(String, String)>, ResponseStream) + Send + Sync>;

/// A response streamed to the HTTP client instead of collected: `on_head` gets the status,
/// headers and the body's stream as soon as the guest sets its response (the guest keeps
/// running and writing meanwhile), and the body goes through a channel of `capacity`
/// chunks, so a slow client makes the guest's writes wait.
pub struct Streaming {
    pub on_head: OnHead,
    pub capacity: usize,
}

mod hyper_response {
    pub type Response = http::Response<super::HyperOutgoingBody>;
}

fn metadata<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    event
        .metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The request `event` describes, with `body` (or the event's data when None).
fn request_for(
    event: &Event,
    body: Option<ChannelBody>,
) -> wasmtime::Result<http::Request<WasiBody>> {
    let method = metadata(event, "method").unwrap_or("POST");
    let path = metadata(event, "path-with-query").unwrap_or("/");
    let authority = metadata(event, "authority").unwrap_or("localhost");
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()?;
    let mut builder = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes())?)
        .uri(uri);
    for (name, value) in &event.headers {
        let value = http::HeaderValue::from_bytes(&header_bytes(value))?;
        builder = builder.header(name.as_str(), value);
    }
    let body = match body {
        Some(stream) => stream.boxed_unsync(),
        // One copy of the data into a refcounted buffer the guest's stream reads from.
        None => Full::new(Bytes::copy_from_slice(&event.data))
            .map_err(|never| match never {})
            .boxed_unsync(),
    };
    Ok(builder.body(body)?)
}

/// A header value's bytes as they arrived: the HTTP trigger decodes values as Latin-1
/// (ASGI's bytes, obs-text included), so each char up to U+00FF is one byte again; a
/// value with wider chars (a broker header) goes as UTF-8.
fn header_bytes(value: &str) -> Vec<u8> {
    if value.chars().all(|c| (c as u32) <= 0xFF) {
        value.chars().map(|c| c as u32 as u8).collect()
    } else {
        value.as_bytes().to_vec()
    }
}

/// Run `event` through the guest's `wasi:http/incoming-handler.handle`.
pub fn serve(
    store: &mut Store<HostState>,
    proxy: &Proxy,
    event: &Event,
    body: Option<ChannelBody>,
    max_body: usize,
    body_wait: std::time::Duration,
    streaming: Option<Streaming>,
) -> wasmtime::Result<Served> {
    let request = request_for(event, body)?;
    let streaming = match streaming {
        Some(Streaming { on_head, capacity }) => {
            let (sink, stream) = response_channel(capacity)?;
            Some((on_head, sink, stream))
        }
        None => None,
    };
    let slot: Arc<Mutex<Option<Outparam>>> = Arc::new(Mutex::new(None));
    let collected: Arc<Mutex<Option<wasmtime_wasi::runtime::AbortOnDropJoinHandle<Collected>>>> =
        Arc::new(Mutex::new(None));
    // Set (to the size reached) before the body is dropped, so a guest that traps on the
    // closed stream is known to have been cut off for size.
    let over = Arc::new(AtomicUsize::new(0));
    let (req, out) = {
        let mut view = store.data_mut().http();
        let req = view.new_incoming_request(Scheme::Http, request)?;
        let slot = slot.clone();
        let collected = collected.clone();
        let over_cb = over.clone();
        let out = view.new_response_outparam_from_callback(move |result| {
            // The guest set its response: start reading the body now, while the guest
            // still writes it, so its writes never wait on a full channel.
            match result {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let task = match streaming {
                        Some((on_head, sink, stream)) => {
                            on_head(parts.status.as_u16(), header_pairs(&parts.headers), stream);
                            wasmtime_wasi::runtime::spawn(forward(body, max_body, over_cb, sink))
                        }
                        None => wasmtime_wasi::runtime::spawn(collect(body, max_body, over_cb)),
                    };
                    *collected.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Ok(http::Response::from_parts(parts, empty_body())));
                }
                Err(code) => {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Err(code));
                }
            }
        })?;
        (req, out)
    };
    let called = proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, req, out);
    let task = collected.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Err(err) = called {
        // A guest writing past `max-response-bytes` traps on the stream we closed: that is
        // the size refusal, not a guest fault. Otherwise the trap stands (its body is
        // incomplete and never waited for).
        drop(task);
        let size = over.load(Ordering::Acquire);
        if size > 0 {
            return Ok(Served::TooLarge(size));
        }
        return Err(err);
    }
    let answer = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    let head = match answer {
        None => {
            return Ok(Served::NoResponse(
                "the guest returned without setting a response (`response-outparam.set`)"
                    .to_owned(),
            ))
        }
        Some(Err(code)) => {
            return Ok(Served::NoResponse(format!(
                "the guest answered with error-code {code:?}"
            )))
        }
        Some(Ok(head)) => head,
    };
    let body = match task {
        // The guest has returned; a body it left unfinished ends when its resources do,
        // and `body_wait` bounds a guest that keeps one alive (a pooled instance).
        Some(task) => wasmtime_wasi::runtime::in_tokio(async move {
            tokio::time::timeout(body_wait, task)
                .await
                .unwrap_or_else(|_| {
                    Collected::Failed("the guest never finished its response body".to_owned())
                })
        }),
        None => Collected::Body(Vec::new()),
    };
    let body = match body {
        Collected::Body(body) => body,
        Collected::TooLarge(size) => return Ok(Served::TooLarge(size)),
        Collected::Failed(text) => {
            return Ok(Served::NoResponse(format!(
                "the response body failed while the guest wrote it: {text}"
            )))
        }
    };
    Ok(Served::Response(Response {
        status: head.status().as_u16(),
        headers: header_pairs(head.headers()),
        body,
    }))
}

fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn empty_body() -> HyperOutgoingBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

enum Collected {
    Body(Vec<u8>),
    TooLarge(usize),
    Failed(String),
}

async fn collect(
    mut body: HyperOutgoingBody,
    max_body: usize,
    over: Arc<AtomicUsize>,
) -> Collected {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > max_body {
                        let size = out.len() + data.len();
                        over.store(size, Ordering::Release);
                        return Collected::TooLarge(size);
                    }
                    out.extend_from_slice(&data);
                }
            }
            Err(err) => return Collected::Failed(format!("{err:?}")),
        }
    }
    Collected::Body(out)
}

/// Pass the guest's body on to the HTTP client chunk by chunk; `Body` (empty) when it
/// ended whole. Past `max_body` the stream is cut: the client already has the head.
async fn forward(
    mut body: HyperOutgoingBody,
    max_body: usize,
    over: Arc<AtomicUsize>,
    sink: ResponseSink,
) -> Collected {
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers: HTTP/1.1 responses of the gateway carry none
                };
                if data.is_empty() {
                    continue;
                }
                size += data.len();
                if size > max_body {
                    over.store(size, Ordering::Release);
                    sink.cut(format!(
                        "the response body reached {size}+ bytes, over max-response-bytes = \
                         {max_body}"
                    ));
                    return Collected::TooLarge(size);
                }
                if !sink.send(data).await {
                    return Collected::Failed("the client stopped reading the response".into());
                }
            }
            Err(err) => {
                let text = format!("{err:?}");
                sink.cut(text.clone());
                return Collected::Failed(text);
            }
        }
    }
    sink.end().await;
    Collected::Body(Vec::new())
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

/// The guest's error code for a refusal or failure of our outbound path. The full text
/// (masked) is already in the gateway log: `HostImports._attempt` logged it.
fn error_code_for(text: &str) -> wasmtime_wasi_http::Error {
    use wasmtime_wasi_http::Error as E;
    if text.contains("allowed-outbound-hosts") || text.contains("may not") {
        E::HttpRequestDenied
    } else if text.contains("timed out") {
        E::ConnectionTimeout
    } else if text.contains("cannot connect") {
        E::ConnectionRefused
    } else if text.contains("over the limit") {
        E::HttpResponseBodySize(None)
    } else if text.contains("invalid outbound URL") {
        E::HttpRequestUriInvalid
    } else {
        E::InternalError(Some(text.to_owned()))
    }
}

impl WasiHttpHooks for CallScope {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let (host, context) = Python::attach(|py| {
            (
                self.imports.host.clone_ref(py),
                self.context.as_ref().map(|c| c.clone_ref(py)),
            )
        });
        // The guest's own timeouts narrow ours; our outbound timeout and the event's
        // deadline still bound the request on the Python side.
        let timeout_ms = options
            .and_then(|o| o.first_byte_timeout.or(o.connect_timeout))
            .map(|d| d.as_millis() as u64);
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let method = parts.method.as_str().to_owned();
            let url = parts.uri.to_string();
            let headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .filter(|(k, _)| *k != http::header::HOST)
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let sent = wasmtime_wasi::runtime::spawn_blocking(move || {
                http_send(host, context, method, url, headers, body, timeout_ms)
            })
            .await;
            let (status, headers, body) = sent.map_err(|text| error_code_for(&text))?;
            let mut builder = http::Response::builder().status(status);
            for (k, v) in &headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let response = builder
                .body(
                    Full::new(Bytes::from(body))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))?;
            let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// `host.http_send(...)` inside the event's context, on a blocking thread of wasmtime's
/// runtime (the guest's thread waits for it without holding the GIL).
fn http_send(
    host: Py<PyAny>,
    context: Option<Py<PyAny>>,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    timeout_ms: Option<u64>,
) -> Result<Reply, String> {
    Python::attach(|py| {
        let run = || -> PyResult<Reply> {
            let pairs = headers
                .iter()
                .map(|(k, v)| PyTuple::new(py, [k.as_str(), v.as_str()]))
                .collect::<PyResult<Vec<_>>>()?;
            let timeout = match timeout_ms {
                Some(t) => t.into_pyobject(py)?.into_any(),
                None => py.None().into_bound(py),
            };
            let func = host.bind(py).getattr("http_send")?;
            let args: Vec<Bound<'_, PyAny>> = vec![
                func,
                PyString::new(py, &method).into_any(),
                PyString::new(py, &url).into_any(),
                PyList::new(py, pairs)?.into_any(),
                PyBytes::new(py, &body).into_any(),
                timeout,
            ];
            let result = match &context {
                Some(ctx) => ctx.bind(py).call_method1("run", PyTuple::new(py, args)?)?,
                None => {
                    let mut args = args;
                    let func = args.remove(0);
                    func.call1(PyTuple::new(py, args)?)?
                }
            };
            let (status, headers, body): (u16, Bound<'_, PyAny>, Bound<'_, PyAny>) =
                result.extract()?;
            Ok((status, to_pairs(&headers)?, to_vec(&body)?))
        };
        run().map_err(|err| error_text(py, &err))
    })
}
