//! The `handle` export's response, lifted with its size bounded before it is copied.
//!
//! wasmtime lifts a `list<u8>` body by copying all of it into a `Vec`; the executor's
//! `max-response-bytes` check came after that copy, so a guest could make the host hold as
//! much as its memory (up to wasmtime's 128 MiB "hostcall fuel" per call, past which the
//! lift trapped and the client got a 500). Here the lengths the guest wrote (the header
//! count, each header's string lengths, the body's length) are read from its memory first,
//! and a response over `max-response-headers` or `max-response-bytes` is refused before any
//! of it is copied. What passes is then lifted by wasmtime's own code, which checks bounds,
//! UTF-8 and alignment as for any other list.
//!
//! The limits reach the lift through a thread-local ([`ResponseLimits::enter`]): the lift
//! runs on the calling thread, inside `TypedFunc::call`, and takes no context of ours.

use std::cell::Cell;
use std::fmt;

use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

use crate::host::types::Response;

/// The limits of the call in progress on this thread, and the header bytes counted so far.
#[derive(Clone, Copy)]
struct Budget {
    max_headers: usize,
    max_bytes: u64,
    header_bytes: u64,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// The limits one call's response is lifted under, until dropped.
pub struct ResponseLimits(());

impl ResponseLimits {
    pub fn enter(max_headers: usize, max_bytes: usize) -> Self {
        BUDGET.with(|b| {
            b.set(Some(Budget {
                max_headers,
                max_bytes: max_bytes as u64,
                header_bytes: 0,
            }))
        });
        ResponseLimits(())
    }
}

impl Drop for ResponseLimits {
    fn drop(&mut self) {
        BUDGET.with(|b| b.set(None));
    }
}

/// A response refused from the lengths its guest wrote, before it was copied.
#[derive(Debug)]
pub enum OverLimit {
    /// More headers than `max-response-headers`: how many.
    Headers(usize),
    /// More than `max-response-bytes` (header names and values plus body): at least this many.
    Bytes(u64),
}

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverLimit::Headers(n) => write!(f, "the response has {n} headers"),
            OverLimit::Bytes(n) => write!(f, "the response is {n}+ bytes"),
        }
    }
}

impl std::error::Error for OverLimit {}

// A string's length word may carry the latin1+utf16 encoding's tag in its top bit.
const UTF16_TAG: u32 = 1 << 31;
// One `tuple<string, string>` in guest memory: two (pointer, length) pairs.
const HEADER_SIZE32: usize = 16;

fn word(memory: &[u8], at: usize) -> Option<u32> {
    let bytes = memory.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Refuse a header list over the limits, from its entries' lengths in guest memory.
/// Out-of-bounds lists pass: wasmtime's own lift reports them as the guest's fault.
fn check_headers(memory: &[u8], ptr: usize, count: usize) -> wasmtime::Result<()> {
    let Some(mut budget) = BUDGET.with(Cell::get) else {
        return Ok(());
    };
    if count > budget.max_headers {
        return Err(wasmtime::Error::new(OverLimit::Headers(count)));
    }
    let mut bytes = 0u64;
    for i in 0..count {
        let at = ptr.saturating_add(i.saturating_mul(HEADER_SIZE32));
        let (Some(name), Some(value)) = (
            word(memory, at.saturating_add(4)),
            word(memory, at.saturating_add(12)),
        ) else {
            return Ok(());
        };
        // For UTF-8 the length is the byte count; for UTF-16 it counts code units, fewer
        // than the UTF-8 bytes they become, so the exact check after the lift still applies.
        bytes += u64::from(name & !UTF16_TAG) + u64::from(value & !UTF16_TAG);
    }
    if bytes > budget.max_bytes {
        return Err(wasmtime::Error::new(OverLimit::Bytes(bytes)));
    }
    budget.header_bytes = bytes;
    BUDGET.with(|b| b.set(Some(budget)));
    Ok(())
}

fn check_body(length: usize) -> wasmtime::Result<()> {
    let Some(budget) = BUDGET.with(Cell::get) else {
        return Ok(());
    };
    let total = budget.header_bytes + length as u64;
    if total > budget.max_bytes {
        return Err(wasmtime::Error::new(OverLimit::Bytes(total)));
    }
    Ok(())
}

fn pointer_pair(bytes: &[u8]) -> (usize, usize) {
    let ptr = word(bytes, 0).unwrap_or(0);
    let len = word(bytes, 4).unwrap_or(0);
    (ptr as usize, len as usize)
}

type HeaderList = Vec<(String, String)>;

/// `list<tuple<string, string>>`, checked against the limits before it is copied.
pub struct Headers(pub HeaderList);

// SAFETY: the same type in every respect as `Vec<(String, String)>`, which it lifts through.
unsafe impl ComponentType for Headers {
    type Lower = <HeaderList as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <HeaderList as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <HeaderList as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads only the list's own pointer and length, then lifts as `Vec` does.
unsafe impl Lift for Headers {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = (src[0].get_u32() as usize, src[1].get_u32() as usize);
        check_headers(cx.memory(), ptr, len)?;
        Ok(Headers(HeaderList::linear_lift_from_flat(cx, ty, src)?))
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = pointer_pair(bytes);
        check_headers(cx.memory(), ptr, len)?;
        Ok(Headers(HeaderList::linear_lift_from_memory(cx, ty, bytes)?))
    }
}

/// `list<u8>`, checked against the limits before it is copied.
pub struct Body(pub Vec<u8>);

// SAFETY: the same type in every respect as `Vec<u8>`, which it lifts through.
unsafe impl ComponentType for Body {
    type Lower = <Vec<u8> as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <Vec<u8> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<u8> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads only the list's own length, then lifts as `Vec` does.
unsafe impl Lift for Body {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        check_body(src[1].get_u32() as usize)?;
        Ok(Body(Vec::<u8>::linear_lift_from_flat(cx, ty, src)?))
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        check_body(pointer_pair(bytes).1)?;
        Ok(Body(Vec::<u8>::linear_lift_from_memory(cx, ty, bytes)?))
    }
}

/// The WIT `response` record, lifted through [`Headers`] and [`Body`].
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct BoundedResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Body,
}

impl From<BoundedResponse> for Response {
    fn from(r: BoundedResponse) -> Self {
        Response {
            status: r.status,
            headers: r.headers.0,
            body: r.body.0,
        }
    }
}

/// What `handle` returns, as the executor lifts it.
pub type HandleResult = (Result<BoundedResponse, String>,);

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name_len: u32, value_len: u32) -> Vec<u8> {
        [0, name_len, 0, value_len]
            .iter()
            .flat_map(|w: &u32| w.to_le_bytes())
            .collect()
    }

    #[test]
    fn headers_and_body_share_the_byte_limit() {
        let _limits = ResponseLimits::enter(2, 100);
        let memory = [entry(10, 20), entry(5, 5)].concat();
        check_headers(&memory, 0, 2).unwrap();
        check_body(60).unwrap();
        let err = check_body(61).unwrap_err();
        assert!(matches!(
            err.downcast_ref::<OverLimit>(),
            Some(OverLimit::Bytes(101))
        ));
    }

    #[test]
    fn too_many_headers_or_header_bytes_are_refused() {
        let _limits = ResponseLimits::enter(1, 100);
        let memory = [entry(1, 1), entry(1, 1)].concat();
        let err = check_headers(&memory, 0, 2).unwrap_err();
        assert!(matches!(
            err.downcast_ref::<OverLimit>(),
            Some(OverLimit::Headers(2))
        ));
        let err = check_headers(&entry(60, 41 | UTF16_TAG), 0, 1).unwrap_err();
        assert!(matches!(
            err.downcast_ref::<OverLimit>(),
            Some(OverLimit::Bytes(101))
        ));
    }

    #[test]
    fn without_limits_or_in_bounds_nothing_is_refused() {
        assert!(check_body(usize::MAX >> 1).is_ok());
        let _limits = ResponseLimits::enter(10, 100);
        // Out of bounds: left to wasmtime's own lift, which names the fault.
        assert!(check_headers(&entry(1, 1), 8, 3).is_ok());
    }
}
