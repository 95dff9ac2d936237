//! `wasi:keyvalue` (0.2.0-draft: store, atomics, batch) over wasmgate's key-value stores.
//!
//! A bucket is a store the component is granted (`key-value-stores`), opened by its name;
//! every operation is the `wasmgate:handler/kv` host call of the same name (crate::host), so the
//! grants, size limits, quotas and TTL handling are the same. A refusal the Python side
//! raises (it has logged it, masked) becomes `access-denied` when it is about the grant,
//! else `other(message)`.

use wasmtime::component::{HasSelf, Linker, Resource};

use crate::host::wasmgate::handler::kv;
use crate::host::{py_str, HostState};

mod bindings {
    wasmtime::component::bindgen!({
        world: "wasmgate:wasi-http-deps/keyvalue-host",
        path: "../bindings/wit-wasi-http",
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// An open bucket: the name of a granted store.
pub struct Bucket {
    store: String,
}

/// Keys a `list-keys` page holds; the cursor is the offset of the next page.
const PAGE: usize = 1000;

pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    store::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    atomics::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    batch::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

fn kv_error(text: String) -> store::Error {
    if text.contains("has no grant") || text.contains("key-value-stores") {
        store::Error::AccessDenied
    } else {
        store::Error::Other(text)
    }
}

impl HostState {
    fn bucket_name(&self, bucket: &Resource<Bucket>) -> Result<String, store::Error> {
        self.table
            .get(bucket)
            .map(|b| b.store.clone())
            .map_err(|e| store::Error::Other(e.to_string()))
    }
}

impl store::Host for HostState {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        self.call_python(
            "kv_open",
            |py| Ok(vec![py_str(py, &identifier)]),
            |_| Ok(()),
        )
        .map_err(kv_error)?;
        self.table
            .push(Bucket { store: identifier })
            .map_err(|e| store::Error::Other(e.to_string()))
    }
}

impl store::HostBucket for HostState {
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        let name = self.bucket_name(&bucket)?;
        kv::Host::get(self, name, key).map_err(kv_error)
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let name = self.bucket_name(&bucket)?;
        kv::Host::set(self, name, key, value, None).map_err(kv_error)
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        let name = self.bucket_name(&bucket)?;
        kv::Host::delete(self, name, key).map_err(kv_error)
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        let name = self.bucket_name(&bucket)?;
        kv::Host::exists(self, name, key).map_err(kv_error)
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, store::Error> {
        let name = self.bucket_name(&bucket)?;
        let mut keys = kv::Host::list_keys(self, name, String::new()).map_err(kv_error)?;
        keys.sort();
        let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let page: Vec<String> = keys.iter().skip(start).take(PAGE).cloned().collect();
        let next = start.saturating_add(page.len());
        Ok(store::KeyResponse {
            cursor: (next < keys.len()).then_some(next as u64),
            keys: page,
        })
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, store::Error> {
        let name = self.bucket_name(&bucket)?;
        let delta = i64::try_from(delta)
            .map_err(|_| store::Error::Other(format!("delta {delta} is over 2^63 - 1")))?;
        let value = kv::Host::increment(self, name, key.clone(), delta).map_err(kv_error)?;
        u64::try_from(value).map_err(|_| {
            store::Error::Other(format!(
                "`{key}` holds {value}, below 0: wasi:keyvalue counters are unsigned"
            ))
        })
    }
}

impl batch::Host for HostState {
    fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        let name = self.bucket_name(&bucket)?;
        keys.into_iter()
            .map(|key| {
                let value = kv::Host::get(self, name.clone(), key.clone()).map_err(kv_error)?;
                Ok(value.map(|v| (key, v)))
            })
            .collect()
    }

    fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        let name = self.bucket_name(&bucket)?;
        for (key, value) in key_values {
            kv::Host::set(self, name.clone(), key, value, None).map_err(kv_error)?;
        }
        Ok(())
    }

    fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        let name = self.bucket_name(&bucket)?;
        for key in keys {
            kv::Host::delete(self, name.clone(), key).map_err(kv_error)?;
        }
        Ok(())
    }
}
