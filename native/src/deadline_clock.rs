//! `wasi:clocks/monotonic-clock` with every subscription cut at the call's deadline.
//!
//! The epoch deadline stops guest code, not a guest blocked in the host: `time.sleep(30)`
//! (a `subscribe-duration`, then `pollable.block`) held its instance and admission slot for
//! 30 s under a 500 ms `timeout-ms`, and many such calls could hold every slot. With each
//! timer cut at the deadline, the wait ends then. A call that ends at or past its deadline
//! with a timer cut there would have run past it: it ends as a timeout (its instance
//! retired) even if the guest, woken early, still answers, since that answer was computed
//! on a clock that lied to it. A cut timer nobody waits on (a watchdog) changes nothing.

use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Host};
use wasmtime_wasi::p2::DynPollable;

use crate::host::HostState;

struct DeadlineClock;

impl HasData for DeadlineClock {
    type Data<'a> = DeadlineClockView<'a>;
}

/// WASI's own monotonic clock, the deadline of the call in progress (None: no call), and
/// where to note that a timer was cut.
struct DeadlineClockView<'a> {
    deadline: Option<Instant>,
    timer_cut: &'a mut bool,
    clocks: WasiClocksCtxView<'a>,
}

impl DeadlineClockView<'_> {
    /// `nanos`, or less: what is left of the call's time (noting when it was less).
    fn cut(&mut self, nanos: u64) -> u64 {
        let Some(deadline) = self.deadline else {
            return nanos;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let left = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
        if nanos > left {
            *self.timer_cut = true;
        }
        nanos.min(left)
    }
}

impl Host for DeadlineClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Host::now(&mut self.clocks)
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Host::resolution(&mut self.clocks)
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let now = Host::now(&mut self.clocks)?;
        self.subscribe_duration(when.saturating_sub(now))
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let nanos = self.cut(duration);
        Host::subscribe_duration(&mut self.clocks, nanos)
    }
}

/// Replace WASI's `monotonic-clock` (already in `linker`) with the deadline-cut one.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    monotonic_clock::add_to_linker::<HostState, DeadlineClock>(linker, |state| {
        DeadlineClockView {
            deadline: state.scope.deadline,
            timer_cut: &mut state.scope.timer_cut,
            clocks: WasiClocksCtxView {
                ctx: state.wasi.clocks(),
                table: &mut state.table,
            },
        }
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_timer_is_cut_to_what_is_left_of_the_call() {
        let mut table = wasmtime::component::ResourceTable::new();
        let mut ctx = wasmtime_wasi::clocks::WasiClocksCtx::default();
        let mut timer_cut = false;
        let mut view = DeadlineClockView {
            deadline: Some(Instant::now() + Duration::from_millis(500)),
            timer_cut: &mut timer_cut,
            clocks: WasiClocksCtxView {
                ctx: &mut ctx,
                table: &mut table,
            },
        };
        let thirty_s = 30_000_000_000;
        assert_eq!(view.cut(1_000), 1_000);
        assert!(!*view.timer_cut, "a timer within the deadline is not cut");
        assert!(view.cut(thirty_s) <= 500_000_000);
        assert!(*view.timer_cut);
        view.deadline = None;
        assert_eq!(view.cut(thirty_s), thirty_s);
    }
}
