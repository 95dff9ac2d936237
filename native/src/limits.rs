//! Per-store resource limits that also tell the pool how close an instance is to them.

use wasmtime::ResourceLimiter;

/// Memory and table limits of one store, with the largest memory it has asked for.
pub struct Limits {
    pub memory_bytes: usize,
    pub table_elements: usize,
    pub instances: usize,
    pub tables: usize,
    pub memories: usize,
    /// The largest size any memory of the store has reached or been refused at.
    pub peak_memory: usize,
    /// A growth past `memory_bytes` was refused during the current call.
    pub memory_refused: bool,
}

impl Limits {
    pub fn new(memory_bytes: usize) -> Self {
        Limits {
            memory_bytes,
            table_elements: 1_000_000,
            instances: 10_000,
            tables: 10_000,
            memories: 10_000,
            peak_memory: 0,
            memory_refused: false,
        }
    }

    /// True when the instance has used most of its memory: a reused instance whose heap
    /// only grows (a guest runtime's fragmentation) would fail a later call, so the pool
    /// retires it first. Three quarters leaves room for one more ordinary call.
    pub fn near_memory_limit(&self) -> bool {
        self.peak_memory > self.memory_bytes / 4 * 3
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = true;
            self.peak_memory = self.peak_memory.max(current);
            return Ok(false);
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        self.instances
    }
    fn tables(&self) -> usize {
        self.tables
    }
    fn memories(&self) -> usize {
        self.memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_growth_past_the_limit_and_remembers_it() {
        let mut limits = Limits::new(1 << 20);
        assert!(limits.memory_growing(0, 512 << 10, None).unwrap());
        assert!(!limits.near_memory_limit());
        assert!(limits.memory_growing(512 << 10, 800 << 10, None).unwrap());
        assert!(limits.near_memory_limit());
        assert!(!limits.memory_growing(800 << 10, 2 << 20, None).unwrap());
        assert!(limits.memory_refused);
    }
}
