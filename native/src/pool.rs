//! Instances of one component: created from an `InstancePre`, reused or not, bounded.
//!
//! `pooled` keeps warm instances and retires one after `max-uses` calls, after any trap,
//! timeout or `err`, and when its memory nears `memory-mb` (a guest heap that only grows
//! would otherwise fail a later call). `fresh` gives every call a new instance; with
//! `spare-instances` a background thread keeps that many instantiated ahead of need, and
//! retired instances are torn down there too, off the call's path.
//!
//! Admission (how many calls run at once) is the caller's: Python's semaphore lets at most
//! `max-instances` calls in, and the pool runs each on one of as many worker threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use wasmtime::component::{Linker, ResourceTable, TypedFunc};
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::sync::{Proxy, ProxyPre};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::body::{ChannelBody, RequestBody};
use crate::completion::{CompletionQueue, Completions, Done};
use crate::engine::{Engine, LoadedComponent, EPOCH_TICK, WORLD_WASI_HTTP};
use crate::event::{event_from_python, Finished, Outcome};
use crate::host::types::{Event, Response};
use crate::host::{link, CallScope, HandlerPre, HostImports, HostState};
use crate::limits::Limits;
use crate::response::{HandleResult, OverLimit, ResponseLimits};
use crate::stderr::StderrCapture;
use crate::wasi_http::{self, Served, Streaming};

/// Chunks in flight between a guest's response body and the HTTP client.
const RESPONSE_CHANNEL_CHUNKS: usize = 4;
/// What wasmtime charges per header against the hostcall fuel when it lifts one.
const HEADER_PAIR_SIZE: usize = std::mem::size_of::<(String, String)>();
use crate::{ComponentContractError, InstantiateError};

/// The export a component serves events through, by world.
enum Guest {
    /// `handle`, called through [`HandleResult`] so its response is bounded as it is lifted.
    Handler(wasmtime::component::Func),
    Proxy(Proxy),
}

enum GuestPre {
    Handler(HandlerPre<HostState>),
    Proxy(ProxyPre<HostState>),
}

struct Instance {
    store: Store<HostState>,
    guest: Guest,
    uses: u64,
}

struct Settings {
    name: String,
    pooled: bool,
    max_uses: u64,
    memory_bytes: usize,
    timeout_ms: u64,
    deadline_ticks: u64,
    consume_fuel: bool,
    fuel: Option<u64>,
    stderr_max_bytes: usize,
    spare_instances: usize,
    max_response_headers: usize,
    max_response_bytes: usize,
}

struct Shared {
    settings: Settings,
    engine: wasmtime::Engine,
    pre: GuestPre,
    imports: Arc<HostImports>,
    idle: Mutex<Vec<Instance>>,
    spares: Mutex<Vec<Instance>>,
    /// Wakes the background thread: a spare was taken, an instance retired, or closing.
    background_wake: Condvar,
    retired: Mutex<Vec<Instance>>,
    instantiated: AtomicU64,
    in_flight: AtomicUsize,
    closed: AtomicBool,
}

impl Shared {
    fn instantiate(&self) -> wasmtime::Result<Instance> {
        let s = &self.settings;
        let stderr = StderrCapture::new(s.stderr_max_bytes);
        // No arguments, environment, preopened directories or sockets: the sandbox
        // reaches only what the wasmgate imports grant.
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        let state = HostState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: Limits::new(s.memory_bytes),
            stderr,
            scope: CallScope {
                imports: self.imports.clone(),
                context: None,
                // Start code runs under the same deadline as a call.
                deadline: deadline_after(s.timeout_ms),
                timer_cut: false,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Instantiation runs guest start code: it gets the same deadline as a call.
        store.set_epoch_deadline(s.deadline_ticks);
        store.epoch_deadline_trap();
        if s.consume_fuel {
            store.set_fuel(s.fuel.unwrap_or(u64::MAX))?;
        }
        // wasmtime copies at most this much per host call, results included ("hostcall
        // fuel", 128 MiB by default); a response within the limits must fit.
        let response_fuel = s
            .max_response_bytes
            .saturating_add(s.max_response_headers.saturating_mul(HEADER_PAIR_SIZE));
        if response_fuel > store.hostcall_fuel() {
            store.set_hostcall_fuel(response_fuel);
        }
        let guest = match &self.pre {
            GuestPre::Handler(pre) => {
                let instance = pre.instance_pre().instantiate(&mut store)?;
                let handle = instance
                    .get_func(&mut store, "handle")
                    .ok_or_else(|| wasmtime::format_err!("the component exports no `handle`"))?;
                // Checked once here (HandlerPre checked the world's own types at link time).
                handle.typed::<(&Event,), HandleResult>(&store)?;
                Guest::Handler(handle)
            }
            GuestPre::Proxy(pre) => Guest::Proxy(pre.instantiate(&mut store)?),
        };
        self.instantiated.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            guest,
            uses: 0,
        })
    }

    fn acquire(&self) -> wasmtime::Result<Instance> {
        if self.settings.pooled {
            if let Some(inst) = self.idle.lock().pop() {
                return Ok(inst);
            }
        } else if self.settings.spare_instances > 0 {
            let spare = self.spares.lock().pop();
            if let Some(inst) = spare {
                self.background_wake.notify_one();
                return Ok(inst);
            }
        }
        self.instantiate()
    }

    fn retire(&self, inst: Instance) {
        if self.settings.spare_instances > 0 && !self.closed.load(Ordering::Relaxed) {
            // Tearing a large guest down takes time; the background thread does it. Its
            // queue is bounded: a retired instance still holds an allocator slot, so past
            // `spare-instances` waiting teardowns this call tears its own down.
            let mut retired = self.retired.lock();
            if retired.len() < self.settings.spare_instances {
                retired.push(inst);
                drop(retired);
                self.background_wake.notify_one();
                return;
            }
        }
        drop(inst);
    }

    /// Run one event to its end on this thread. Never touches Python except through
    /// host imports, which take the GIL themselves.
    fn run(
        &self,
        event: &Event,
        body: Option<ChannelBody>,
        context: Option<Py<PyAny>>,
        streaming: Option<Streaming>,
    ) -> (Finished, Option<Py<PyAny>>) {
        let mut inst = match self.acquire() {
            Ok(inst) => inst,
            Err(err) => {
                let outcome = match err.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => Outcome::Timeout,
                    _ => Outcome::Unavailable(format!("{err:#}")),
                };
                let finished = Finished {
                    outcome,
                    stderr: Vec::new(),
                    stderr_dropped: 0,
                };
                return (finished, context);
            }
        };
        let s = &self.settings;
        inst.uses += 1;
        inst.store.data_mut().scope.context = context;
        inst.store.data_mut().scope.deadline = deadline_after(s.timeout_ms);
        inst.store.data_mut().scope.timer_cut = false;
        inst.store.data_mut().limits.memory_refused = false;
        inst.store.set_epoch_deadline(s.deadline_ticks);
        if let Some(fuel) = s.fuel.filter(|_| s.consume_fuel) {
            // Refuelling can only fail when fuel is off, which the filter rules out.
            let _ = inst.store.set_fuel(fuel);
        }
        let outcome = match &inst.guest {
            Guest::Handler(handle) => {
                // The response's lengths are checked as it is lifted, before it is copied.
                let _limits = ResponseLimits::enter(s.max_response_headers, s.max_response_bytes);
                // SAFETY: `handle` was typechecked against exactly these types when the
                // instance was made (`instantiate`), as bindgen's own `call_handle` does.
                let typed = unsafe { TypedFunc::<(&Event,), HandleResult>::new_unchecked(*handle) };
                let result = typed.call(&mut inst.store, (event,));
                match result {
                    Ok((Ok(response),)) => self.check_size(response.into()),
                    Ok((Err(message),)) => Outcome::Returned(message),
                    Err(err) => match err.downcast_ref::<OverLimit>() {
                        Some(over) => self.over_limit(over),
                        None => self.classify(&err, &inst.store.data().limits),
                    },
                }
            }
            Guest::Proxy(proxy) => {
                match wasi_http::serve(
                    &mut inst.store,
                    proxy,
                    event,
                    body,
                    s.max_response_bytes,
                    std::time::Duration::from_millis(s.timeout_ms),
                    streaming,
                ) {
                    Ok(Served::Response(response)) => self.check_size(response),
                    Ok(Served::NoResponse(message)) => Outcome::Returned(message),
                    Ok(Served::TooLarge(size)) => Outcome::Invalid(format!(
                        "component `{}` wrote a response body of {size}+ bytes, over its \
                         max-response-bytes = {}; raise `max-response-bytes` in \
                         [component.{}] if that much is intended",
                        s.name, s.max_response_bytes, s.name
                    )),
                    Err(err) => self.classify(&err, &inst.store.data().limits),
                }
            }
        };
        // A call ending at or past its deadline with a timer cut there was woken by it: it
        // would have run past its deadline. (A cut timer nobody waited on, a watchdog say,
        // leaves a call that ends in time alone.)
        let scope = &inst.store.data().scope;
        let woken_by_cut = scope.timer_cut && scope.deadline.is_some_and(|d| Instant::now() >= d);
        let outcome = if woken_by_cut {
            Outcome::Timeout
        } else {
            outcome
        };
        let context = inst.store.data_mut().scope.context.take();
        inst.store.data_mut().scope.deadline = None;
        let (stderr, stderr_dropped) = inst.store.data().stderr.take();
        let keep = matches!(outcome, Outcome::Ok(_))
            && s.pooled
            && inst.uses < s.max_uses
            && !inst.store.data().limits.near_memory_limit()
            && !self.closed.load(Ordering::Relaxed);
        if keep {
            self.idle.lock().push(inst);
        } else {
            self.retire(inst);
        }
        let finished = Finished {
            outcome,
            stderr,
            stderr_dropped,
        };
        (finished, context)
    }

    /// Refuse a response over `max-response-headers` / `max-response-bytes` before it is
    /// copied again (into Python); the words match gateway/responses.py.
    fn check_size(&self, response: Response) -> Outcome {
        let s = &self.settings;
        let name = &s.name;
        let count = response.headers.len();
        if count > s.max_response_headers {
            return Outcome::Invalid(format!(
                "component `{name}` returned {count} headers, over its max-response-headers = \
                 {}; raise `max-response-headers` in [component.{name}] if that many are \
                 intended",
                s.max_response_headers
            ));
        }
        let size = response.body.len()
            + response
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > s.max_response_bytes {
            return Outcome::Invalid(format!(
                "component `{name}` returned a {size}-byte response (body and headers), over \
                 its max-response-bytes = {}; raise `max-response-bytes` in \
                 [component.{name}] if that much is intended",
                s.max_response_bytes
            ));
        }
        Outcome::Ok(response)
    }

    /// A response refused from its lengths, before it was copied; the words match
    /// [`Self::check_size`].
    fn over_limit(&self, over: &OverLimit) -> Outcome {
        let s = &self.settings;
        let name = &s.name;
        Outcome::Invalid(match over {
            OverLimit::Headers(count) => format!(
                "component `{name}` returned {count} headers, over its max-response-headers = \
                 {}; raise `max-response-headers` in [component.{name}] if that many are \
                 intended",
                s.max_response_headers
            ),
            OverLimit::Bytes(size) => format!(
                "component `{name}` returned a response of {size}+ bytes (body and headers), \
                 over its max-response-bytes = {}; raise `max-response-bytes` in \
                 [component.{name}] if that much is intended",
                s.max_response_bytes
            ),
        })
    }

    fn classify(&self, err: &wasmtime::Error, limits: &Limits) -> Outcome {
        let s = &self.settings;
        let mut text = match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => return Outcome::Timeout,
            Some(Trap::OutOfFuel) => format!(
                "ran out of fuel (`fuel` = {}); raise `fuel` or find the loop",
                s.fuel.unwrap_or(0)
            ),
            Some(trap) => trap.to_string(),
            None => err.root_cause().to_string(),
        };
        if limits.memory_refused {
            text.push_str(&format!(
                "; a memory growth past `memory-mb` ({} MiB) was refused during the call: \
                 raise `memory-mb` if the handler needs more",
                s.memory_bytes >> 20
            ));
        }
        Outcome::Trap(text)
    }

    /// Keeps `spare-instances` ready and tears retired instances down, until closed.
    fn background(&self) {
        loop {
            let retired = std::mem::take(&mut *self.retired.lock());
            drop(retired);
            if self.closed.load(Ordering::Relaxed) {
                break;
            }
            let need_spare = self.spares.lock().len() < self.settings.spare_instances;
            if need_spare {
                match self.instantiate() {
                    Ok(inst) => self.spares.lock().push(inst),
                    // The next call instantiates for itself and reports the error; waiting
                    // here keeps a broken component from spinning this thread.
                    Err(_) => self.wait(std::time::Duration::from_millis(500)),
                }
                continue;
            }
            self.wait(std::time::Duration::from_secs(1));
        }
        self.spares.lock().clear();
        self.retired.lock().clear();
    }

    fn wait(&self, timeout: std::time::Duration) {
        let mut spares = self.spares.lock();
        if self.retired.lock().is_empty()
            && spares.len() >= self.settings.spare_instances
            && !self.closed.load(Ordering::Relaxed)
        {
            self.background_wake.wait_for(&mut spares, timeout);
        }
    }
}

struct Job {
    call_id: u64,
    event: Event,
    body: Option<ChannelBody>,
    context: Py<PyAny>,
    queue: Arc<Completions>,
    stream_response: bool,
}

fn worker(shared: Arc<Shared>, jobs: Receiver<Job>) {
    // Host calls take the GIL on this thread. Attached once and then detached, the thread
    // keeps its Python thread state, so each host call only takes the GIL back instead of
    // creating and tearing down a thread state (tens of µs a call).
    Python::attach(|py| py.detach(|| run_jobs(&shared, &jobs)));
}

fn run_jobs(shared: &Shared, jobs: &Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        let Job {
            call_id,
            event,
            body,
            context,
            queue,
            stream_response,
        } = job;
        let streaming = stream_response.then(|| {
            let queue = queue.clone();
            let on_head = move |status, headers, stream| {
                queue.push(Done {
                    call_id,
                    finished: Finished {
                        outcome: Outcome::Head(status, headers, stream),
                        stderr: Vec::new(),
                        stderr_dropped: 0,
                    },
                    context: None,
                })
            };
            Streaming {
                on_head: Box::new(on_head),
                capacity: RESPONSE_CHANNEL_CHUNKS,
            }
        });
        let (finished, context) = shared.run(&event, body, Some(context), streaming);
        // Free the event's copy before the response is copied into Python: the host holds
        // at most two copies of a call's data at once.
        drop(event);
        queue.push(Done {
            call_id,
            finished,
            context,
        });
        shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct Threads {
    sender: Option<Sender<Job>>,
    receiver: Option<Receiver<Job>>,
    workers: Vec<JoinHandle<()>>,
    background: Option<JoinHandle<()>>,
}

/// The instances of one component and the threads that run its calls.
#[pyclass(module = "gateway._native", frozen, weakref)]
pub struct Pool {
    shared: Arc<Shared>,
    max_instances: usize,
    threads: Mutex<Threads>,
}

fn setting<'py, T: pyo3::conversion::FromPyObjectOwned<'py>>(
    d: &Bound<'py, PyDict>,
    name: &str,
) -> PyResult<T> {
    d.get_item(name)?
        .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(format!("pool setting `{name}`")))?
        .extract()
        .map_err(Into::into)
}

#[pymethods]
impl Pool {
    /// Link `component` against the WASI and wasmgate imports (served by `host`), prepare
    /// it, and create one instance to prove it runs. `settings` holds name, pooled,
    /// max_instances, max_uses, memory_bytes, timeout_ms, fuel, stderr_max_bytes,
    /// spare_instances and variables.
    #[new]
    fn new(
        py: Python<'_>,
        engine: &Engine,
        component: &LoadedComponent,
        host: Py<PyAny>,
        settings: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        let timeout_ms: u64 = setting(settings, "timeout_ms")?;
        let tick = EPOCH_TICK.as_millis() as u64;
        let s = Settings {
            name: setting(settings, "name")?,
            pooled: setting(settings, "pooled")?,
            max_uses: setting(settings, "max_uses")?,
            memory_bytes: setting(settings, "memory_bytes")?,
            timeout_ms,
            deadline_ticks: timeout_ms.div_ceil(tick).max(1),
            consume_fuel: engine.consume_fuel,
            fuel: setting(settings, "fuel")?,
            stderr_max_bytes: setting(settings, "stderr_max_bytes")?,
            spare_instances: setting(settings, "spare_instances")?,
            max_response_headers: setting(settings, "max_response_headers")?,
            max_response_bytes: setting(settings, "max_response_bytes")?,
        };
        let max_instances: usize = setting(settings, "max_instances")?;
        let variables: HashMap<String, String> = setting(settings, "variables")?;
        let name = s.name.clone();
        let mut linker = Linker::new(&engine.engine);
        link(&mut linker).map_err(|e| InstantiateError::new_err(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component.component)
            .and_then(|pre| {
                if component.world == WORLD_WASI_HTTP {
                    ProxyPre::new(pre).map(GuestPre::Proxy)
                } else {
                    HandlerPre::new(pre).map(GuestPre::Handler)
                }
            })
            .map_err(|e| {
                ComponentContractError::new_err(format!(
                    "component `{name}` cannot be linked: {e:#}. A component may import WASI \
                     0.2, wasi:http 0.2 and the wasmgate:handler imports, and must export \
                     `handle` as in bindings/wit/handler.wit or \
                     `wasi:http/incoming-handler` (world `wasi:http/proxy`)"
                ))
            })?;
        let shared = Arc::new(Shared {
            settings: s,
            engine: engine.engine.clone(),
            pre,
            imports: Arc::new(HostImports { host, variables }),
            idle: Mutex::new(Vec::new()),
            spares: Mutex::new(Vec::new()),
            background_wake: Condvar::new(),
            retired: Mutex::new(Vec::new()),
            instantiated: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        // Fail at load, not on the first event, if the component cannot run here.
        let first = py
            .detach(|| shared.instantiate())
            .map_err(|e| instantiate_error(&name, shared.settings.timeout_ms, &e))?;
        if shared.settings.pooled {
            shared.idle.lock().push(first);
        }
        let (sender, receiver) = crossbeam_channel::unbounded();
        let mut threads = Threads {
            sender: Some(sender),
            receiver: Some(receiver),
            ..Threads::default()
        };
        if shared.settings.spare_instances > 0 && !shared.settings.pooled {
            let bg = shared.clone();
            threads.background = Some(
                std::thread::Builder::new()
                    .name(format!("wasmgate-spares-{name}"))
                    .spawn(move || bg.background())
                    .map_err(|e| InstantiateError::new_err(format!("spawning a thread: {e}")))?,
            );
        }
        Ok(Pool {
            shared,
            max_instances: max_instances.max(1),
            threads: Mutex::new(threads),
        })
    }

    /// Queue `event` to run on a worker thread; its result arrives on `queue` as
    /// `(call_id, kind, payload, stderr, stderr_dropped)`. Raises ValueError for an event
    /// that cannot be passed to a component (e.g. a negative `time`). A `wasi:http`
    /// component reads its request body from `body` when given, instead of the event's data.
    /// With `stream_response`, a `wasi:http` component's response comes first as kind HEAD
    /// (`(status, headers, ResponseStream)`) as soon as the guest sets it, then the call's
    /// outcome as usual under the same call id.
    #[pyo3(signature = (call_id, event, context, queue, body=None, stream_response=false))]
    fn submit(
        &self,
        call_id: u64,
        event: &Bound<'_, PyAny>,
        context: Py<PyAny>,
        queue: &CompletionQueue,
        body: Option<&RequestBody>,
        stream_response: bool,
    ) -> PyResult<()> {
        let event = event_from_python(event)?;
        let body = body.and_then(RequestBody::take_receiver);
        let mut threads = self.threads.lock();
        let Some(sender) = threads.sender.clone() else {
            return Err(InstantiateError::new_err(format!(
                "component `{}` is closed",
                self.shared.settings.name
            )));
        };
        let busy = self.shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if busy > threads.workers.len() && threads.workers.len() < self.max_instances {
            let shared = self.shared.clone();
            let receiver = threads
                .receiver
                .clone()
                .expect("receiver lives until close");
            let handle = std::thread::Builder::new()
                .name(format!("wasmgate-{}", self.shared.settings.name))
                .spawn(move || worker(shared, receiver))
                .map_err(|e| InstantiateError::new_err(format!("spawning a thread: {e}")))?;
            threads.workers.push(handle);
        }
        drop(threads);
        let job = Job {
            call_id,
            event,
            body,
            context,
            queue: queue.inner.clone(),
            stream_response,
        };
        sender
            .send(job)
            .map_err(|_| InstantiateError::new_err("the pool's workers have stopped"))
    }

    /// Run `event` on the calling thread with the GIL released; returns
    /// `(kind, payload, stderr, stderr_dropped)`.
    fn call<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        context: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let event = event_from_python(event)?;
        let shared = self.shared.clone();
        let (finished, context) = py.detach(move || shared.run(&event, None, Some(context), None));
        drop(context);
        Ok(finished.into_python(py)?.into_bound(py))
    }

    /// How many instances this pool has created, the load-time one included.
    #[getter]
    fn instantiated(&self) -> u64 {
        self.shared.instantiated.load(Ordering::Relaxed)
    }

    /// Warm instances waiting for a call (pooled) or spares ready (fresh).
    #[getter]
    fn ready_instances(&self) -> usize {
        self.shared.idle.lock().len() + self.shared.spares.lock().len()
    }

    /// Stop taking calls; queued calls finish first. Waits for the threads (GIL released).
    fn close(&self, py: Python<'_>) {
        let mut threads = std::mem::take(&mut *self.threads.lock());
        threads.sender = None;
        threads.receiver = None;
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.background_wake.notify_all();
        py.detach(|| {
            for w in threads.workers.drain(..) {
                let _ = w.join();
            }
            if let Some(bg) = threads.background.take() {
                let _ = bg.join();
            }
            self.shared.idle.lock().clear();
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Without close(): let the threads end by themselves (joining here could wait on a
        // worker that waits for the GIL this thread may hold).
        let mut threads = self.threads.lock();
        threads.sender = None;
        threads.receiver = None;
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.background_wake.notify_all();
    }
}

/// `timeout_ms` from now; None when that is past what an `Instant` holds (no deadline).
fn deadline_after(timeout_ms: u64) -> Option<Instant> {
    Instant::now().checked_add(Duration::from_millis(timeout_ms))
}

fn instantiate_error(name: &str, timeout_ms: u64, err: &wasmtime::Error) -> PyErr {
    let detail = match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!("its start code ran past `timeout-ms` ({timeout_ms} ms)"),
        _ => format!("{err:#}"),
    };
    InstantiateError::new_err(format!(
        "component `{name}` cannot be instantiated: {detail}"
    ))
}
