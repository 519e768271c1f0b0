//! [`NixlRegion`]: host memory this crate owns and NIXL may read and write. The crate's only
//! `unsafe` code is here.

use std::fmt;

use nixl_sys::{
    Agent, MemType, MemoryRegion, NixlDescriptor, NixlError, OptArgs, RegistrationHandle,
};

/// A fixed-size slab of host memory registered with a NIXL agent: a peer that has loaded the
/// agent's metadata can READ from it (or WRITE into it) one-sided, and this process reads and
/// writes it as a byte slice.
///
/// The slab is allocated zeroed once and never grows, shrinks or moves; it is deregistered
/// before it is freed (on drop). Rust reaches its bytes only through [`as_slice`](Self::as_slice)
/// and [`as_mut_slice`](Self::as_mut_slice); NIXL writes into it only in a transfer that names
/// its addresses. This crate's transfers take the landing region by `&mut` (or own it) while
/// NIXL writes into it, and its peers only READ a source's regions; a peer that WRITEs into a
/// region while this process reads it would race with that read.
pub struct NixlRegion {
    /// Declared (and dropped) before `slab`: deregistered while the memory is still there.
    registration: Option<RegistrationHandle>,
    slab: Slab,
}

/// The memory of a [`NixlRegion`]: boxed, so its address is fixed for its whole life.
#[derive(Debug)]
struct Slab(Box<[u8]>);

#[expect(
    unsafe_code,
    reason = "nixl-sys registers only `NixlDescriptor`s, whose `MemoryRegion::as_ptr` is an unsafe fn"
)]
impl MemoryRegion for Slab {
    // SAFETY: the pointer is the start of `self.0`, `self.size()` bytes long. NIXL keeps it in
    // its registration, which `NixlRegion` drops (deregisters) before the `Slab` it belongs to
    // (field order and `NixlRegion::drop`), so NIXL never holds it past the memory's life. The
    // box is never replaced, resized or moved out of its `NixlRegion` (the field is private and
    // nothing assigns it after `NixlRegion::new`), so the address stays valid while registered.
    // Writing through it is only done by NIXL in transfers that this crate runs while it holds
    // the region by `&mut` or by value (see `NixlRegion`), so it never aliases a Rust borrow of
    // the bytes.
    unsafe fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }

    fn size(&self) -> usize {
        self.0.len()
    }
}

impl NixlDescriptor for Slab {
    fn mem_type(&self) -> MemType {
        MemType::Dram
    }

    fn device_id(&self) -> u64 {
        0
    }
}

impl NixlRegion {
    /// `bytes` of zeroed host memory, registered with `agent` (for the backends in `args`).
    ///
    /// # Errors
    ///
    /// What NIXL says when it refuses the registration (for example an agent with no backend
    /// that can register host memory). Needs NIXL loaded ([`crate::is_nixl_loaded`]): without
    /// it, NIXL aborts the process.
    pub fn new(agent: &Agent, args: Option<&OptArgs>, bytes: usize) -> Result<Self, NixlError> {
        if bytes == 0 {
            return Err(NixlError::InvalidParam);
        }
        let slab = Slab(vec![0; bytes].into_boxed_slice());
        let registration = agent.register_memory(&slab, args)?;
        Ok(NixlRegion {
            registration: Some(registration),
            slab,
        })
    }

    /// The address NIXL knows the first byte by, for transfer descriptors.
    pub fn address(&self) -> usize {
        self.slab.0.as_ptr() as usize
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.slab.0.len()
    }

    /// Whether the region is empty (never: [`new`](Self::new) refuses zero bytes).
    pub fn is_empty(&self) -> bool {
        self.slab.0.is_empty()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.slab.0
    }

    /// The bytes, to write (no transfer of this crate writes into the region meanwhile: it
    /// would need the region by `&mut` too).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.slab.0
    }
}

impl Drop for NixlRegion {
    fn drop(&mut self) {
        // Deregister before the slab is freed (the fields' order would too; this says it).
        drop(self.registration.take());
    }
}

impl fmt::Debug for NixlRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NixlRegion")
            .field("address", &format_args!("{:#x}", self.address()))
            .field("len", &self.len())
            .field("registered", &self.registration.is_some())
            .finish()
    }
}
