//! An output's start shared by the parts of a parallel loop that each write their own
//! elements of it (disjoint columns of a product, disjoint rows of a conv's map): a raw
//! pointer, which rayon's closures cannot capture otherwise.
#![allow(unsafe_code)]

/// Where an output slice starts, for parts that write disjoint elements of it while the
/// slice outlives them (the parallel loop ends before its owner's borrow does).
#[derive(Clone, Copy)]
pub(super) struct SharedOut(*mut f32);

// SAFETY: the parts write disjoint elements, and the slice outlives them (see the type).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(super) fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}
