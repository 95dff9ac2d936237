//! One wasmtime Engine per process: its configuration, epoch ticker and compile cache.
//!
//! The pooling instance allocator is on by default, sized by the caller from the
//! manifest; where the address-space reservation it needs is refused, the engine falls
//! back to on-demand allocation and says why (`pooling_fallback`). Compiled components are
//! cached on disk, keyed by the wasm digest and the engine's compatibility hash (which
//! covers wasmtime's version and every setting that changes generated code), so loading a
//! cached component never recompiles it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::prelude::*;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::{ComponentContractError, ComponentLoadError};

pub const WASMTIME_VERSION: &str = "48.0.8";
/// One epoch tick: the resolution of every handler timeout.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Bumped when the artifact layout or what goes into the key changes.
const CACHE_FORMAT: &str = "wasmgate-native-2"; // 2: entries end with a seal

/// The limits the pooling allocator reserves up front.
#[derive(Clone, Debug)]
pub struct PoolingLimits {
    pub slots: u32,
    pub max_memory_bytes: usize,
    pub core_instances_per_component: u32,
    pub memories_per_component: u32,
    pub tables_per_component: u32,
    pub table_elements: usize,
    /// Bytes of each memory and table kept resident between instances (0 = none), so a
    /// fresh instance starts on warm pages instead of faulting its heap image in again.
    pub keep_resident_bytes: usize,
}

fn base_config(consume_fuel: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(consume_fuel);
    config.parallel_compilation(true);
    // Both are wasmtime's defaults; set so the intent is explicit: instances start from a
    // copy-on-write image of their initial memory, and funcref tables fill lazily.
    config.memory_init_cow(true);
    config.table_lazy_init(true);
    config
}

fn pooling_config(limits: &PoolingLimits) -> PoolingAllocationConfig {
    let mut pac = PoolingAllocationConfig::new();
    let slots = limits.slots.max(1);
    pac.total_component_instances(slots)
        .total_core_instances(slots * limits.core_instances_per_component)
        .total_memories(slots * limits.memories_per_component)
        .total_tables(slots * limits.tables_per_component)
        .max_core_instances_per_component(limits.core_instances_per_component)
        .max_memories_per_component(limits.memories_per_component)
        .max_tables_per_component(limits.tables_per_component)
        .max_memories_per_module(limits.memories_per_component)
        .max_tables_per_module(limits.tables_per_component)
        .table_elements(limits.table_elements)
        .max_memory_size(limits.max_memory_bytes)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .linear_memory_keep_resident(limits.keep_resident_bytes)
        .table_keep_resident(limits.keep_resident_bytes);
    pac
}

/// Stops the epoch ticker when the last owner of the engine lets go.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: wasmtime::Engine) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // A plain thread: it never touches Python, so it never waits for the GIL.
        let thread = std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Ticker {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process's wasmtime Engine.
#[pyclass(module = "gateway._native", frozen)]
pub struct Engine {
    pub engine: wasmtime::Engine,
    pub consume_fuel: bool,
    /// The pooling limits in force, None when on-demand.
    pub pooling: Option<PoolingLimits>,
    pooling_fallback: Option<String>,
    cache_key: String,
    ticker: parking_lot::Mutex<Ticker>,
}

#[pymethods]
impl Engine {
    /// `pooling`: None for on-demand allocation, else a dict of PoolingLimits fields.
    #[new]
    #[pyo3(signature = (*, consume_fuel=false, pooling=None))]
    fn new(consume_fuel: bool, pooling: Option<&Bound<'_, pyo3::types::PyDict>>) -> PyResult<Self> {
        let limits = pooling.map(pooling_limits_from).transpose()?;
        let (engine, pooling, fallback) = match &limits {
            Some(l) => {
                let mut config = base_config(consume_fuel);
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(l)));
                match wasmtime::Engine::new(&config) {
                    Ok(engine) => (engine, Some(l.clone()), None),
                    Err(err) => {
                        let engine = wasmtime::Engine::new(&base_config(consume_fuel))
                            .map_err(|e| ComponentLoadError::new_err(format!("{e:#}")))?;
                        (engine, None, Some(format!("{err:#}")))
                    }
                }
            }
            None => {
                let engine = wasmtime::Engine::new(&base_config(consume_fuel))
                    .map_err(|e| ComponentLoadError::new_err(format!("{e:#}")))?;
                (engine, None, None)
            }
        };
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let cache_key = format!(
            "{CACHE_FORMAT};wasmtime={WASMTIME_VERSION};compat={:016x}",
            hasher.finish()
        );
        let ticker = Ticker::start(engine.clone());
        Ok(Engine {
            engine,
            consume_fuel,
            pooling,
            pooling_fallback: fallback,
            cache_key,
            ticker: parking_lot::Mutex::new(ticker),
        })
    }

    /// True when instances come from the pooling allocator.
    #[getter]
    fn pooling_enabled(&self) -> bool {
        self.pooling.is_some()
    }

    /// Why pooling was asked for but is off (the reservation was refused), else None.
    #[getter]
    fn pooling_fallback(&self) -> Option<String> {
        self.pooling_fallback.clone()
    }

    /// Compile `wasm` (binary or text) or load it from `cache_dir`; the GIL is released
    /// meanwhile. `label` names the file in errors.
    fn load_component(
        &self,
        py: Python<'_>,
        wasm: Vec<u8>,
        cache_dir: PathBuf,
        label: String,
    ) -> PyResult<LoadedComponent> {
        let key = self.artifact_name(&wasm);
        let artifact = cache_dir.join(format!("{key}.cwasm"));
        let engine = self.engine.clone();
        let (component, from_cache, cache_note) = py
            .detach(move || load_or_compile(&engine, &wasm, &cache_dir, &artifact))
            .map_err(|e| {
                ComponentLoadError::new_err(format!(
                    "{label} is not a valid WebAssembly component: {e:#}"
                ))
            })?;
        let world = detect_world(&self.engine, &component).map_err(|found| {
            ComponentContractError::new_err(format!(
                "{label} exports neither the function `handle` of the world \
                 `wasmgate:handler/handler` (bindings/wit/handler.wit) nor \
                 `wasi:http/incoming-handler`; it exports: {found}. Build it against \
                 `wasmgate:handler/handler` or the standard `wasi:http/proxy` world"
            ))
        })?;
        Ok(LoadedComponent {
            component,
            from_cache,
            cache_note,
            world,
        })
    }

    /// True if `wasm`'s compiled artifact is already in `cache_dir`.
    fn is_cached(&self, wasm: Vec<u8>, cache_dir: PathBuf) -> bool {
        cache_dir
            .join(format!("{}.cwasm", self.artifact_name(&wasm)))
            .exists()
    }

    /// Stop the epoch ticker (timeouts stop firing). Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.ticker.lock().stop());
    }
}

impl Engine {
    fn artifact_name(&self, wasm: &[u8]) -> String {
        let mut digest = Sha256::new();
        digest.update(wasm);
        digest.update(self.cache_key.as_bytes());
        hex::encode(digest.finalize())
    }
}

fn pooling_limits_from(d: &Bound<'_, pyo3::types::PyDict>) -> PyResult<PoolingLimits> {
    let get = |name: &str| -> PyResult<Bound<'_, PyAny>> {
        d.get_item(name)?.ok_or_else(|| {
            pyo3::exceptions::PyKeyError::new_err(format!("pooling limit `{name}` missing"))
        })
    };
    Ok(PoolingLimits {
        slots: get("slots")?.extract()?,
        max_memory_bytes: get("max_memory_bytes")?.extract()?,
        core_instances_per_component: get("core_instances_per_component")?.extract()?,
        memories_per_component: get("memories_per_component")?.extract()?,
        tables_per_component: get("tables_per_component")?.extract()?,
        table_elements: get("table_elements")?.extract()?,
        keep_resident_bytes: get("keep_resident_bytes")?.extract()?,
    })
}

/// (component, loaded from the cache?, a note when the cache could not be used)
fn load_or_compile(
    engine: &wasmtime::Engine,
    wasm: &[u8],
    cache_dir: &Path,
    artifact: &Path,
) -> wasmtime::Result<(Component, bool, Option<String>)> {
    let mut note = None;
    if let Ok(file) = std::fs::read(artifact) {
        match unsealed(artifact, &file) {
            // Loaded from the file, not from `file`'s bytes: mapped, the component's
            // memory images come from the page cache; copied, every fresh instance's heap
            // image faulted in from an anonymous copy (~15% more CPU per fresh
            // componentize-py call, bench/bench_executor.py). The seal after the ELF
            // object is past everything wasmtime reads.
            // SAFETY: the file holds what `Component::serialize` of an engine with the
            // same compatibility hash (part of the file name) wrote under this name: the
            // seal just checked says so, and entries are only ever replaced whole (by
            // rename). wasmtime checks the header and refuses a mismatched one.
            Some(_) => match unsafe { Component::deserialize_file(engine, artifact) } {
                Ok(component) => return Ok((component, true, None)),
                Err(e) => {
                    note = Some(format!(
                        "discarded unreadable cache entry {artifact:?}: {e}"
                    ))
                }
            },
            None => {
                note = Some(format!(
                    "discarded damaged cache entry {artifact:?}: its contents are not what \
                     was written under that name; recompiling"
                ))
            }
        }
    }
    let component = Component::new(engine, wasm)?;
    let bytes = sealed(artifact, &component.serialize()?);
    if let Err(e) = write_atomically(cache_dir, artifact, &bytes) {
        note = Some(format!(
            "could not write the compile cache {artifact:?}: {e}"
        ));
    }
    Ok((component, false, note))
}

/// Bytes of the SHA-256 seal every cache entry ends with.
const SEAL_LEN: usize = 32;

/// The seal of an artifact stored under `path`: SHA-256 of its file name and its bytes.
/// Deserializing runs the machine code as it is, so a damaged entry, or one copied over
/// another's name, must be recompiled instead (the seal is no defence against someone who
/// may write the cache directory on purpose: only the gateway's user should).
fn seal(path: &Path, bytes: &[u8]) -> [u8; SEAL_LEN] {
    let name = path
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default();
    let mut digest = Sha256::new();
    digest.update((name.len() as u64).to_le_bytes());
    digest.update(name);
    digest.update(bytes);
    digest.finalize().into()
}

fn sealed(path: &Path, artifact: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(artifact.len() + SEAL_LEN);
    file.extend_from_slice(artifact);
    file.extend_from_slice(&seal(path, artifact));
    file
}

/// The artifact inside a cache file, if its seal matches its name and bytes.
fn unsealed<'a>(path: &Path, file: &'a [u8]) -> Option<&'a [u8]> {
    let (artifact, found) = file.split_at(file.len().checked_sub(SEAL_LEN)?);
    (seal(path, artifact) == found).then_some(artifact)
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    // A rename is atomic: a concurrent start never reads half an artifact.
    std::fs::rename(&tmp, path)
}

pub const WORLD_HANDLER: &str = "wasmgate:handler/handler";
pub const WORLD_WASI_HTTP: &str = "wasi:http/proxy";

/// The world `component` targets, judged by its exports; Err lists what it exports.
fn detect_world(engine: &wasmtime::Engine, component: &Component) -> Result<String, String> {
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    if names.iter().any(|n| n == "handle") {
        return Ok(WORLD_HANDLER.to_owned());
    }
    if names
        .iter()
        .any(|n| n.starts_with("wasi:http/incoming-handler@"))
    {
        return Ok(WORLD_WASI_HTTP.to_owned());
    }
    Err(if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    })
}

/// A compiled component and what the engine learned loading it.
#[pyclass(module = "gateway._native", frozen)]
pub struct LoadedComponent {
    pub component: Component,
    from_cache: bool,
    cache_note: Option<String>,
    pub world: String,
}

#[pymethods]
impl LoadedComponent {
    /// True when the compiled artifact came from the cache (nothing was compiled).
    #[getter(from_cache)]
    fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }

    /// A note when the cache could not be read or written, else None.
    #[getter]
    fn cache_note(&self) -> Option<String> {
        self.cache_note.clone()
    }

    /// The world the component targets: "wasmgate:handler/handler" or "wasi:http/proxy".
    #[getter]
    fn world(&self) -> String {
        self.world.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_artifact_opens_only_under_its_own_name_and_unchanged() {
        let here = Path::new("/cache/aaaa.cwasm");
        let there = Path::new("/cache/bbbb.cwasm");
        let file = sealed(here, b"machine code");
        assert_eq!(unsealed(here, &file), Some(&b"machine code"[..]));
        assert_eq!(unsealed(there, &file), None);
        let mut damaged = file.clone();
        damaged[3] ^= 0xff;
        assert_eq!(unsealed(here, &damaged), None);
        assert_eq!(unsealed(here, &file[..SEAL_LEN - 1]), None);
        assert_eq!(unsealed(here, b""), None);
    }
}
